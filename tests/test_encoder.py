"""The encoder's tokenized entry points: `tokenize_texts` (once, with the counts before the
cut), `plan_batches` and `encode_ids` (one forward pass, no second cut) give what
sentence-transformers gives for the same texts and prompt."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sentembed

TEXTS = ["A man is playing a guitar.", "", "Short", "word " * 200, "日本語のテキスト 😀", "two words"]
PROMPTS = {"query": "query: ", "document": "passage: "}


@pytest.fixture(scope="module")
def prompt_model(tiny_model_factory):
    return tiny_model_factory(pooling="mean", prompts=PROMPTS, include_prompt=False, normalize=False)


def encode_planned(enc, tokens, batch_size=2, **options) -> np.ndarray:
    out = np.empty((len(tokens.ids), options.get("truncate_dim") or enc.dimension), np.float32)
    for rows in enc.plan_batches([len(ids) for ids in tokens.ids], batch_size):
        out[rows] = enc.encode_ids([tokens.ids[i] for i in rows], tokens.prompt_length, **options)
    return out


def test_encode_ids_equals_the_reference_with_a_prompt(prompt_model):
    from sentence_transformers import SentenceTransformer

    enc = sentembed.load(str(prompt_model), device="cpu")
    tokens = enc.tokenize_texts(TEXTS, prompt_name="query")
    assert tokens.counts == enc.count_tokens(TEXTS, prompt_name="query")
    assert [len(ids) for ids in tokens.ids] == [min(n, enc.max_seq_length) for n in tokens.counts]
    assert tokens.prompt_length > 0
    expected = SentenceTransformer(str(prompt_model), device="cpu").encode(TEXTS, prompt_name="query")
    np.testing.assert_allclose(encode_planned(enc, tokens), expected, atol=1e-5, rtol=0)


def test_encode_ids_applies_the_output_options_as_encode(tiny_model):
    enc = sentembed.load(str(tiny_model), device="cpu")
    tokens = enc.tokenize_texts(TEXTS)
    assert tokens.prompt_length == 0
    for options in ({}, {"normalize": False}, {"normalize": True, "truncate_dim": 16}, {"truncate_dim": 8}):
        np.testing.assert_allclose(encode_planned(enc, tokens, **options), enc.encode(TEXTS, **options),
                                   atol=1e-6, rtol=0, err_msg=str(options))
    as_torch = enc.encode_ids(tokens.ids, convert_to="torch")
    assert isinstance(as_torch, torch.Tensor) and as_torch.shape == (len(TEXTS), enc.dimension)
    assert enc.encode_ids([]).shape == (0, enc.dimension)


def test_bf16_on_amx_plans_longer_forward_passes(tiny_model, monkeypatch):
    """torch's bf16 on AMX tiles holds AMX_BF16_TOKEN_BUDGET tokens a pass; fp32, and bf16
    without AMX, the default 512."""
    from types import SimpleNamespace

    from sentembed.model import mpnet

    bf16, fp32 = (sentembed.load(str(tiny_model), dtype=dtype) for dtype in ("bfloat16", "float32"))
    lengths = [300] * 8
    alone = [[i] for i in range(8)]
    monkeypatch.setattr(mpnet, "cpu", lambda: SimpleNamespace(amx=True))
    assert bf16.token_budget(32) == mpnet.AMX_BF16_TOKEN_BUDGET == 2048
    assert bf16.plan_batches(lengths) == [[0, 1, 2, 3, 4, 5], [6, 7]]
    assert bf16.plan_batches(lengths, batch_size=4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # batch_size still binds
    assert fp32.plan_batches(lengths) == alone
    monkeypatch.setattr(mpnet, "cpu", lambda: SimpleNamespace(amx=False))
    assert bf16.plan_batches(lengths) == alone


def test_encode_ids_runs_the_batch_as_given(tiny_model, monkeypatch):
    enc = sentembed.load(str(tiny_model), device="cpu")
    widths = []
    real = enc.tokenizer.pad
    monkeypatch.setattr(enc.tokenizer, "pad", lambda ids, device: widths.append(len(ids)) or real(ids, device))
    enc.encode_ids(enc.tokenize_texts(TEXTS * 10).ids)
    assert widths == [len(TEXTS) * 10]  # one forward pass: not cut again


def test_encode_ids_refuses_what_encode_would_not_read(tiny_model):
    enc = sentembed.load(str(tiny_model), device="cpu")
    with pytest.raises(ValueError, match="item 1 has 0 tokens"):
        enc.encode_ids([[0, 2], []])
    with pytest.raises(ValueError, match="item 0 has 65 tokens"):
        enc.encode_ids([[0] * (enc.max_seq_length + 1)])
    with pytest.raises(ValueError, match="unknown prompt_name"):
        enc.tokenize_texts(["a"], prompt_name="nope")
    with pytest.raises(ValueError, match="batch_size"):
        enc.plan_batches([3], batch_size=0)
