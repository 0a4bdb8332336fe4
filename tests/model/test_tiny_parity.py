"""Every pipeline shape of the models we serve, on tiny random-weight models built by the
reference: our vectors equal sentence-transformers' within 1e-5, and models round-trip."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import sentembed

TEXTS = [
    "A man is playing a guitar.",
    "",
    "   ",
    "Short",
    "Das ist ein längerer deutscher Satz mit Umlauten: Größe, Übermaß.",
    "日本語のテキストと中文混合 😀🎉",
    "word " * 200,  # longer than the tiny models' max_seq_length of 64
]

CONFIGS = {
    "cls_dot_no_normalize": dict(pooling="cls", normalize=False, similarity="dot"),
    "mean_normalize": dict(pooling="mean", normalize=True),
    "max": dict(pooling="max", normalize=False),
    "mean_sqrt_len": dict(pooling="mean_sqrt_len_tokens", normalize=False),
    "weightedmean": dict(pooling="weightedmean", normalize=True),
    "lasttoken": dict(pooling="lasttoken", normalize=False),
    "cls_and_mean": dict(pooling=["cls", "mean"], normalize=False),
    "dense": dict(pooling="mean", dense_out=24, normalize=True),
    "prompt_excluded": dict(pooling="mean", prompts={"query": "query: ", "document": "passage: "}, include_prompt=False),
}


def reference(path):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(path), device="cpu")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_tiny_model_matches_reference(tiny_model_factory, name):
    path = tiny_model_factory(**CONFIGS[name])
    ours = sentembed.load(str(path), device="cpu")
    ref = reference(path)
    assert ours.dimension == ref.get_embedding_dimension()
    assert ours.normalizes == CONFIGS[name].get("normalize", True)
    expected = ref.encode(TEXTS, batch_size=3)
    got = ours.encode(TEXTS, batch_size=3)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    if "prompts" in CONFIGS[name]:
        np.testing.assert_allclose(
            ours.encode_query(TEXTS), ref.encode_query(TEXTS), atol=1e-5, rtol=0)
        np.testing.assert_allclose(
            ours.encode(TEXTS, prompt_name="document"), ref.encode(TEXTS, prompt_name="document"), atol=1e-5, rtol=0)


def test_similarity_name_follows_model(tiny_model_factory):
    ours = sentembed.load(str(tiny_model_factory(**CONFIGS["cls_dot_no_normalize"])))
    assert ours.similarity_fn_name == "dot"
    a = ours.encode(TEXTS[:3])
    np.testing.assert_allclose(ours.similarity(a, a), a @ a.T, rtol=1e-5, atol=1e-5)


def test_plain_masked_lm_checkpoint_loads_as_mean_pooling(tmp_path):
    """microsoft/mpnet-base, where the seed models started: no modules.json, `mpnet.` prefix."""
    from sentence_transformers import SentenceTransformer
    from transformers import MPNetConfig, MPNetForMaskedLM

    from support import TINY_CONFIG, save_tiny_tokenizer

    torch.manual_seed(1)
    MPNetForMaskedLM(MPNetConfig(**TINY_CONFIG)).save_pretrained(tmp_path)
    save_tiny_tokenizer(tmp_path)
    ours = sentembed.load(str(tmp_path))
    ref = SentenceTransformer(str(tmp_path), device="cpu")
    assert not ours.normalizes
    np.testing.assert_allclose(ours.encode(TEXTS[:6]), ref.encode(TEXTS[:6]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", ["dense", "cls_dot_no_normalize", "prompt_excluded", "cls_and_mean"])
def test_saved_by_us_loads_in_reference(tiny_model_factory, tmp_path, name):
    ours = sentembed.load(str(tiny_model_factory(**CONFIGS[name])))
    ours.save(tmp_path / "saved")
    ref = reference(tmp_path / "saved")
    np.testing.assert_allclose(ref.encode(TEXTS), ours.encode(TEXTS), atol=1e-5, rtol=0)
    assert ref.similarity_fn_name == ours.similarity_fn_name
    assert ref.prompts.get("query") == ours.prompts.get("query")
    reloaded = sentembed.load(str(tmp_path / "saved"))
    np.testing.assert_array_equal(reloaded.encode(TEXTS), ours.encode(TEXTS))


def test_save_replaces_existing_directory_atomically(tiny_model, tmp_path):
    ours = sentembed.load(str(tiny_model))
    target = tmp_path / "model"
    ours.save(target)
    ours.save(target)  # a second save swaps in a whole new tree
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    np.testing.assert_array_equal(sentembed.load(str(target)).encode(TEXTS), ours.encode(TEXTS))
