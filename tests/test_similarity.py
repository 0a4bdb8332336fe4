"""sentembed.vectors and precision against the reference's own functions
(sentence_transformers.util), and Matryoshka truncation against SentenceTransformer.encode."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sentembed.precision import quantize
from sentembed.vectors import SIMILARITIES, paired_scores, pairwise_scores, resolve_similarity, topk

REFERENCE = {  # sentence_transformers.util: (pairwise, paired)
    "cosine": ("cos_sim", "pairwise_cos_sim"),
    "dot": ("dot_score", "pairwise_dot_score"),
    "euclidean": ("euclidean_sim", "pairwise_euclidean_sim"),
    "manhattan": ("manhattan_sim", "pairwise_manhattan_sim"),
}


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    return rng.normal(size=(5, 16)).astype(np.float32), rng.normal(size=(7, 16)).astype(np.float32)


def _reference(name: str, paired: bool):
    from sentence_transformers import util

    return getattr(util, REFERENCE[name][paired])


@pytest.mark.parametrize("name", SIMILARITIES)
def test_pairwise_matches_reference(vectors, name):
    from sentence_transformers import SimilarityFunction

    a, b = vectors
    expected = SimilarityFunction.to_similarity_fn(name)(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(pairwise_scores(a, b, name), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_reference(name, paired=False)(torch.tensor(a), torch.tensor(b)).numpy(), expected)
    # float64 in, float64 out; one vector is one row
    assert pairwise_scores(a.astype(np.float64), b, name).dtype == np.float64
    np.testing.assert_allclose(pairwise_scores(a[0], b, name), expected[:1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SIMILARITIES)
def test_paired_matches_reference(vectors, name):
    a, b = vectors
    expected = _reference(name, paired=True)(torch.tensor(a), torch.tensor(b[:5])).numpy()
    np.testing.assert_allclose(paired_scores(a, b[:5], name), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(paired_scores(a, b[:5], name), np.diag(pairwise_scores(a, b[:5], name)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", SIMILARITIES)
@pytest.mark.parametrize("paired", [False, True])
def test_torch_scores_keep_dtype_and_gradients(vectors, name, paired):
    """Losses score float64 tensors and back-propagate: same values and gradients as the reference."""
    a, b = (torch.tensor(v[:5], dtype=torch.float64) for v in vectors)
    ours_a, ref_a = a.clone().requires_grad_(), a.clone().requires_grad_()
    ours = (paired_scores if paired else pairwise_scores)(ours_a, b, name)
    ref = _reference(name, paired)(ref_a, b)
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-9)
    ours.sum().backward()
    ref.sum().backward()
    torch.testing.assert_close(ours_a.grad, ref_a.grad, rtol=1e-6, atol=1e-9)


def test_gradients_stay_finite_on_equal_rows():
    x = torch.randn(3, 4, requires_grad=True)
    for name in SIMILARITIES:
        (pairwise_scores(x, x, name).sum() + paired_scores(x, x.detach(), name).sum()).backward()
        assert bool(torch.isfinite(x.grad).all()), name
        x.grad = None


def test_pairwise_errors(vectors):
    a, b = vectors
    with pytest.raises(ValueError, match="valid: cosine"):
        pairwise_scores(a, b, "jaccard")
    with pytest.raises(ValueError, match="dimension mismatch"):
        pairwise_scores(a, b[:, :8])
    with pytest.raises(ValueError, match="rows"):
        paired_scores(a, b)


def test_names_and_aliases():
    assert resolve_similarity(None) == "cosine"
    assert [resolve_similarity(n) for n in ("cos_sim", "COSINE", "dot_product", "dot_score", "L2", "l1",
                                            "euclidean_similarity")] == [
        "cosine", "cosine", "dot", "dot", "euclidean", "manhattan", "euclidean"]

    class Encoder:
        similarity_fn_name = "dot"

    assert resolve_similarity(Encoder()) == "dot"
    with pytest.raises(ValueError, match="config.json: unknown similarity 'hamming'; valid: cosine, dot, euclidean, manhattan"):
        resolve_similarity("hamming", "config.json")
    with pytest.raises(TypeError, match="similarity_fn_name"):
        resolve_similarity(3)


@pytest.mark.parametrize("name", SIMILARITIES)
def test_topk_is_the_best_rows_in_order(vectors, name):
    rng = np.random.default_rng(1)
    q, c = rng.normal(size=(9, 16)), rng.normal(size=(300, 16))
    c[7] = c[3]  # a tie: the lower row comes first
    scores, idx = topk(q, c, 5, name, query_chunk=4, corpus_chunk=64)
    full = _reference(name, paired=False)(torch.tensor(q), torch.tensor(c)).numpy()
    expected = np.argsort(-full, axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(idx, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, 1), rtol=1e-9, atol=1e-9)
    assert topk(q[:0], c, 5, name)[1].shape == (0, 5)
    assert topk(q, c[:3], 5, name)[1].shape == (9, 3)


def test_topk_with_many_ties_and_infinities_keeps_the_lower_row_first():
    rng = np.random.default_rng(2)
    q = rng.integers(-2, 3, size=(7, 4)).astype(np.float32)  # few distinct scores: ties everywhere
    c = rng.integers(-2, 3, size=(500, 4)).astype(np.float32)
    c[::11] = np.inf * np.sign(rng.normal(size=(len(c[::11]), 4)))
    for k, chunk in ((1, 64), (9, 64), (40, 97), (600, 128)):
        scores, idx = topk(q, c, k, "dot", query_chunk=3, corpus_chunk=chunk)
        with np.errstate(invalid="ignore"):
            full = q @ c.T
        expected = np.argsort(-full, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(idx, expected)


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


@pytest.mark.parametrize("config", [dict(pooling="mean", normalize=True),
                                    dict(pooling="cls", normalize=False, similarity="dot")])
def test_truncate_dim_matches_reference(tiny_model_factory, config):
    """Matryoshka as sentence-transformers does it: cut after the whole pipeline (Normalize
    included, so a normalizing model's cut vectors are not unit length), and back to unit
    length only when normalization is asked for."""
    import sentembed
    from sentence_transformers import SentenceTransformer

    path = tiny_model_factory(**config)
    ours, ref = sentembed.load(str(path), device="cpu"), SentenceTransformer(str(path), device="cpu")
    texts = ["one", "two words", "three more words", ""]
    for dim in (8, ours.dimension):
        np.testing.assert_allclose(ours.encode(texts, truncate_dim=dim), ref.encode(texts, truncate_dim=dim),
                                   atol=1e-5, rtol=0)
        np.testing.assert_allclose(ours.encode(texts, truncate_dim=dim, normalize=True),
                                   ref.encode(texts, truncate_dim=dim, normalize_embeddings=True), atol=1e-5, rtol=0)
    if ours.normalizes:
        assert not np.allclose(np.linalg.norm(ours.encode(texts, truncate_dim=8), axis=1), 1.0)
