"""Similarity and precision against the reference's own functions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sentembed.precision import quantize
from sentembed.similarity import pairwise


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 16)).astype(np.float32), rng.normal(size=(7, 16)).astype(np.float32)


@pytest.mark.parametrize("name", ["cosine", "dot", "euclidean", "manhattan"])
def test_pairwise_matches_reference(vectors, name):
    from sentence_transformers import SimilarityFunction

    a, b = vectors
    expected = SimilarityFunction.to_similarity_fn(name)(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(pairwise(a, b, name), expected, rtol=1e-5, atol=1e-5)


def test_pairwise_errors(vectors):
    a, b = vectors
    with pytest.raises(ValueError, match="valid: cosine"):
        pairwise(a, b, "jaccard")
    with pytest.raises(ValueError, match="dimension mismatch"):
        pairwise(a, b[:, :8])


@pytest.mark.parametrize("precision", ["int8", "uint8", "binary", "ubinary"])
def test_quantize_matches_reference(vectors, precision):
    from sentence_transformers.util.quantization import quantize_embeddings

    a, _ = vectors
    np.testing.assert_array_equal(quantize(a, precision), quantize_embeddings(a, precision=precision))


def test_encode_precision_and_truncate(tiny_model):
    import sentembed

    model = sentembed.load(str(tiny_model))
    texts = ["one", "two words", "three more words"]
    full = model.encode(texts)
    assert model.encode(texts, precision="ubinary").shape == (3, full.shape[1] // 8)
    np.testing.assert_array_equal(model.encode(texts, precision="int8"), quantize(full, "int8"))
    cut = model.encode(texts, truncate_dim=8, normalize=True)
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(cut, full[:, :8] / np.linalg.norm(full[:, :8], axis=1, keepdims=True), rtol=1e-5, atol=1e-6)
    as_torch = model.encode(texts, convert_to="torch")
    assert isinstance(as_torch, torch.Tensor) and np.allclose(as_torch.numpy(), full)
