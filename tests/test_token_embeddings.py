"""`encode(..., output="token")`: each text's token embeddings without padding, as
sentence-transformers' `output_value="token_embeddings"` gives them (tiny random-weight model)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sentembed

TEXTS = ["A man is playing a guitar.", "", "Short", "word " * 200, "日本語のテキスト 😀", "two words"]


@pytest.fixture(scope="module")
def models(tiny_model_factory):
    from sentence_transformers import SentenceTransformer

    path = tiny_model_factory(pooling="mean", dense_out=24, prompts={"query": "query: "})
    return sentembed.load(str(path), device="cpu"), SentenceTransformer(str(path), device="cpu")


def test_token_embeddings_equal_the_reference(models):
    enc, ref = models
    expected = ref.encode(TEXTS, output_value="token_embeddings", batch_size=4)
    got = enc.encode(TEXTS, output="token", batch_size=4)
    assert isinstance(got, list) and len(got) == len(TEXTS)
    for text, ours, theirs, ids in zip(TEXTS, got, expected, enc.tokenizer.ids(TEXTS)):
        assert ours.shape == (len(ids), enc.pipeline.transformer.mpnet.config.hidden_size), text
        assert ours.dtype == np.float32
        np.testing.assert_allclose(ours, theirs.float().numpy(), atol=1e-5, rtol=0, err_msg=text)


def test_single_text_prompt_and_torch(models):
    enc, ref = models
    one = enc.encode(TEXTS[0], output="token")
    np.testing.assert_allclose(one, ref.encode(TEXTS[0], output_value="token_embeddings").float().numpy(), atol=1e-5)
    with_prompt = enc.encode(TEXTS[:3], output="token", prompt_name="query", convert_to="torch")
    expected = ref.encode(TEXTS[:3], output_value="token_embeddings", prompt_name="query")
    for ours, theirs in zip(with_prompt, expected):
        assert isinstance(ours, torch.Tensor)
        torch.testing.assert_close(ours, theirs.float(), atol=1e-5, rtol=0)
    assert enc.encode([], output="token") == []


def test_token_output_refuses_sentence_options(models):
    enc, _ = models
    with pytest.raises(ValueError, match="output must be"):
        enc.encode("x", output="tokens")
    for options in ({"precision": "int8"}, {"truncate_dim": 8}):
        with pytest.raises(ValueError, match="token embeddings"):
            enc.encode("x", output="token", **options)
