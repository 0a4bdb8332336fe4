"""Packed sequences (block-diagonal FlexAttention, run eagerly on CPU) against the padded path:
the same token embeddings and sentence embeddings within 1e-5 in fp32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sentembed
from sentembed.model.packing import (pack, packed_sentence_embeddings, packed_token_embeddings, pool_packed,
                                     use_packing)
from sentembed.model.pooling import MODES, Pooling

MAX_SEQ = 256
# 1 to 256 tokens: distances past 128 land in the last bucket, 256 is max_seq_length.
LENGTHS = [1, 2, 3, 5, 7, 9, 16, 33, 64, 100, 127, 128, 129, 150, 200, 255, MAX_SEQ, 12, 4, 40]


def token_ids(lengths: list[int], seed: int = 0) -> list[list[int]]:
    """<s> random word ids </s>; no pad id (1) inside, which the padded path reads as padding."""
    rng = np.random.default_rng(seed)
    rows = []
    for n in lengths:
        middle = rng.integers(5, 30000, size=max(n - 2, 0)).tolist()
        rows.append(([0] + middle + [2])[:n])
    return rows


def padded(pipeline, ids: list[list[int]]) -> dict[str, torch.Tensor]:
    with torch.inference_mode():
        return pipeline(pipeline.transformer.tokenizer.pad(ids))


@pytest.fixture(scope="module")
def mean_model(tiny_model_factory):
    return sentembed.load(str(tiny_model_factory(pooling="mean", normalize=False, max_seq_length=MAX_SEQ)), device="cpu")


@pytest.fixture(scope="module")
def cls_model(tiny_model_factory):
    # Dense and Normalize after the pooling: the modules that follow run on packed output too.
    path = tiny_model_factory(pooling="cls", dense_out=24, normalize=True, max_seq_length=MAX_SEQ, seed=1)
    return sentembed.load(str(path), device="cpu")


def test_pack_layout():
    packed = pack([[0, 9, 2], [0, 2]], align=4)
    assert packed.input_ids.tolist() == [[0, 9, 2, 0, 2, 1, 1, 1]]
    assert packed.position_ids.tolist() == [[2, 3, 4, 2, 3, 1, 1, 1]]
    assert packed.seq_ids.tolist() == [0, 0, 0, 1, 1, 2, 2, 2]  # the alignment padding is a sequence of its own
    assert packed.cu_seqlens.tolist() == [0, 3, 5] and packed.cu_seqlens.dtype == torch.int32
    assert packed.num_tokens == 5
    with pytest.raises(ValueError, match="sequence 1 is empty"):
        pack([[0, 2], []])


@pytest.mark.parametrize("model_name", ["mean_model", "cls_model"])
@pytest.mark.parametrize("budget", [600, 1 << 16])  # several rows, one row
def test_packed_equals_padded(request, model_name, budget):
    model = request.getfixturevalue(model_name)
    ids = token_ids(LENGTHS)
    expected = padded(model.pipeline, ids)["sentence_embedding"]
    with torch.inference_mode():
        got = packed_sentence_embeddings(model.pipeline, ids, token_budget=budget)
    assert got.shape == expected.shape == (len(ids), model.dimension)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("lengths", [[17], [MAX_SEQ], [MAX_SEQ, MAX_SEQ, MAX_SEQ]], ids=["one", "one-max", "three-max"])
def test_single_and_longest_sequences(mean_model, lengths):
    ids = token_ids(lengths, seed=len(lengths))
    with torch.inference_mode():
        got = packed_sentence_embeddings(mean_model.pipeline, ids)
    torch.testing.assert_close(got, padded(mean_model.pipeline, ids)["sentence_embedding"], atol=1e-5, rtol=0)


def test_token_embeddings_equal_unpadded_rows(mean_model):
    ids = token_ids(LENGTHS, seed=2)
    expected = padded(mean_model.pipeline, ids)["token_embeddings"]
    mpnet = mean_model.pipeline.transformer.mpnet
    with torch.inference_mode():
        tokens = packed_token_embeddings(mpnet, pack(ids))
    assert tokens.shape == (sum(LENGTHS), mpnet.config.hidden_size)
    for i, piece in enumerate(tokens.split(LENGTHS)):
        torch.testing.assert_close(piece, expected[i, : LENGTHS[i]], atol=1e-5, rtol=0)


def test_encode_on_text_equals_packed(cls_model):
    texts = ["A man is playing a guitar.", "", "Short", "word " * 300, "日本語のテキスト 😀"]
    ids = cls_model.tokenizer.ids(texts)
    with torch.inference_mode():
        got = packed_sentence_embeddings(cls_model.pipeline, ids)
    np.testing.assert_allclose(got.numpy(), cls_model.encode(texts), atol=1e-5, rtol=0)


def test_encoder_takes_the_packed_path_where_packing_is_on(mean_model, monkeypatch):
    import sentembed.encoder as encoder_module

    texts = ["A man is playing a guitar.", "", "word " * 300, "Short one"] * 3
    padded_vectors = mean_model.encode(texts, normalize=True)
    calls = []
    real = encoder_module.packed_sentence_embeddings
    monkeypatch.setattr(encoder_module, "use_packing", lambda device: True)
    monkeypatch.setattr(encoder_module, "packed_sentence_embeddings", lambda *a, **k: calls.append(1) or real(*a, **k))
    packed_vectors = mean_model.encode(texts, normalize=True)
    assert calls
    np.testing.assert_allclose(packed_vectors, padded_vectors, atol=1e-5, rtol=0)


@pytest.mark.parametrize("include_prompt", [True, False])
def test_every_pooling_mode_over_segments(include_prompt):
    """pool_packed against Pooling.forward on the same tokens; the prompt (4 tokens) covers
    all of the 1- and 3-token sequences."""
    torch.manual_seed(0)
    lengths = [1, 3, 4, 5, 9, 30]
    tokens = torch.randn(sum(lengths), 8)
    packed = pack(token_ids(lengths))
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    rows = torch.zeros(len(lengths), max(lengths), 8)
    for i, piece in enumerate(tokens.split(lengths)):
        rows[i, : lengths[i]], mask[i, : lengths[i]] = piece, 1
    pooling = Pooling(8, list(MODES), include_prompt=include_prompt)
    expected = pooling({"token_embeddings": rows, "attention_mask": mask, "prompt_length": 4})["sentence_embedding"]
    got = pool_packed(pooling, tokens, packed, prompt_length=4)
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


def test_empty_input_and_wrong_backend(mean_model):
    assert packed_sentence_embeddings(mean_model.pipeline, []).shape == (0, mean_model.dimension)
    with pytest.raises(TypeError, match="torch MPNet followed by Pooling"):
        packed_sentence_embeddings([mean_model.pipeline[1]], [[0, 2]])


def test_packing_is_opt_in_and_for_cuda_only(monkeypatch):
    monkeypatch.delenv("SENTEMBED_PACKING", raising=False)
    assert not use_packing("cuda")  # padded batches by default: faster on documents, no compile wait
    monkeypatch.setenv("SENTEMBED_PACKING", "1")
    assert not use_packing("cpu")
    monkeypatch.setenv("SENTEMBED_PACKING", "0")
    assert not use_packing("cuda")
    monkeypatch.setenv("SENTEMBED_PACKING", "1")
    assert use_packing("cuda")  # the switch itself; CUDA is not needed to ask


@pytest.mark.real_model
@pytest.mark.slow
def test_real_model_packed_equals_encode(real_encoder, stsb_dev):
    texts = stsb_dev[0][:12] + [" ".join(stsb_dev[1][:80])]  # the last one is cut at 384 tokens
    ids = real_encoder.tokenizer.ids(texts)
    assert max(len(row) for row in ids) == real_encoder.max_seq_length
    with torch.inference_mode():
        got = packed_sentence_embeddings(real_encoder.pipeline, ids)
    np.testing.assert_allclose(got.numpy(), real_encoder.encode(texts), atol=1e-5, rtol=0)
