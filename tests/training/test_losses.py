"""Each loss against its formula and against sentence-transformers' class on the same embeddings."""
from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F

from sentembed.training.losses import (CachedMultipleNegativesRankingLoss, CoSENTLoss, CosineSimilarityLoss,
                                       MatryoshkaLoss, MultipleNegativesRankingLoss, TripletLoss, make_loss)

st_losses = pytest.importorskip("sentence_transformers.sentence_transformer.losses")
st_util = pytest.importorskip("sentence_transformers.util")


def emb(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("hard", [0, 1, 2])
@pytest.mark.parametrize("sim", ["cosine", "dot"])
def test_mnrl_matches_formula_and_reference(hard, sim):
    a, p = emb(6, 8, seed=1), emb(6, 8, seed=2)
    negs = [emb(6, 8, seed=3 + k) for k in range(hard)]
    scale = 20.0 if sim == "cosine" else 1.0
    ours = MultipleNegativesRankingLoss(scale=scale, similarity=sim)([a, p, *negs])
    cands = torch.cat([p, *negs])
    if sim == "cosine":
        s = F.normalize(a, dim=-1) @ F.normalize(cands, dim=-1).T
    else:
        s = a @ cands.T
    s = s * scale
    formula = -(s.diagonal()[:6] - torch.logsumexp(s, 1)).mean()
    ref = st_losses.MultipleNegativesRankingLoss(None, scale=scale, similarity_fct=st_util.cos_sim if sim == "cosine" else st_util.dot_score)
    theirs = ref.compute_loss_from_embeddings([a, p, *negs], None)
    assert ours.item() == pytest.approx(formula.item(), abs=1e-10)
    assert ours.item() == pytest.approx(theirs.item(), abs=1e-10)


@pytest.mark.parametrize("hard", [0, 1])
def test_symmetric_mnrl_matches_reference(hard):
    a, p = emb(5, 8, seed=1), emb(5, 8, seed=2)
    negs = [emb(5, 8, seed=9)] * hard
    ours = MultipleNegativesRankingLoss(symmetric=True)([a, p, *negs])
    ref = st_losses.MultipleNegativesRankingLoss(None, directions=("query_to_doc", "doc_to_query"),
                                                 partition_mode="per_direction")
    assert ours.item() == pytest.approx(ref.compute_loss_from_embeddings([a, p, *negs], None).item(), abs=1e-10)
    # the 1B-pairs script: (CE(s) + CE(s.T)) / 2 for pairs
    if not hard:
        s = 20 * F.normalize(a, dim=-1) @ F.normalize(p, dim=-1).T
        t = torch.arange(5)
        assert ours.item() == pytest.approx(((F.cross_entropy(s, t) + F.cross_entropy(s.T, t)) / 2).item(), abs=1e-10)


@pytest.mark.parametrize("distance", ["euclidean", "cosine", "manhattan"])
def test_triplet_is_true_distance_hinge(distance):
    a, p, n = emb(7, 4, seed=1), emb(7, 4, seed=2), emb(7, 4, seed=3)
    d = {"euclidean": lambda x, y: (x - y).pow(2).sum(-1).sqrt(),
         "manhattan": lambda x, y: (x - y).abs().sum(-1),
         "cosine": lambda x, y: 1 - F.cosine_similarity(x, y)}[distance]
    ours = TripletLoss(distance, margin=5)([a, p, n])
    formula = torch.clamp(d(a, p) - d(a, n) + 5, min=0).mean()
    assert ours.item() == pytest.approx(formula.item(), rel=1e-6)
    metric = {"euclidean": st_losses.TripletDistanceMetric.EUCLIDEAN, "cosine": st_losses.TripletDistanceMetric.COSINE,
              "manhattan": st_losses.TripletDistanceMetric.MANHATTAN}[distance]
    theirs = st_losses.TripletLoss(None, distance_metric=metric, triplet_margin=5).compute_loss_from_embeddings([a, p, n], None)
    ref_metric = metric(a, p)
    # the installed reference is only trusted when its "distance" is a true distance (>= 0)
    if bool((ref_metric >= -1e-9).all()):
        assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_triplet_direction_pulls_positive_closer():
    a = torch.zeros(1, 2)
    p = torch.tensor([[1.0, 0.0]], requires_grad=True)
    n = torch.tensor([[0.0, 3.0]], requires_grad=True)
    TripletLoss("euclidean", margin=5)([a, p, n]).backward()
    # gradient descent moves p towards a and n away from a
    assert p.grad[0, 0] > 0 and n.grad[0, 1] < 0


def test_cosent_matches_formula_and_reference():
    a, b = emb(6, 8, seed=4), emb(6, 8, seed=5)
    y = torch.tensor([0.1, 0.9, 0.5, 0.5, 0.3, 1.0], dtype=torch.float64)
    ours = CoSENTLoss(scale=20)([a, b], y)
    cos = F.cosine_similarity(a, b)
    terms = [20 * (cos[j] - cos[i]) for i in range(6) for j in range(6) if y[i] > y[j]]
    formula = torch.log(1 + sum(torch.exp(t) for t in terms))
    assert ours.item() == pytest.approx(formula.item(), rel=1e-9)
    theirs = st_losses.CoSENTLoss(None, scale=20).compute_loss_from_embeddings([a, b], y)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_cosine_similarity_loss():
    a, b = emb(6, 8, seed=4), emb(6, 8, seed=5)
    y = torch.linspace(0, 1, 6, dtype=torch.float64)
    ours = CosineSimilarityLoss()([a, b], y)
    assert ours.item() == pytest.approx(((F.cosine_similarity(a, b) - y) ** 2).mean().item(), rel=1e-6)
    theirs = st_losses.CosineSimilarityLoss(None).compute_loss_from_embeddings([a, b], y)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_matryoshka_sums_truncated_losses():
    a, p = emb(6, 16, seed=1), emb(6, 16, seed=2)
    inner = MultipleNegativesRankingLoss()
    ours = MatryoshkaLoss(inner, [16, 8, 4], [1, 0.5, 0.25])([a, p])
    ref = st_losses.MultipleNegativesRankingLoss(None)
    expect = sum(w * ref.compute_loss_from_embeddings([a[:, :d], p[:, :d]], None) for d, w in [(16, 1), (8, .5), (4, .25)])
    assert ours.item() == pytest.approx(expect.item(), abs=1e-10)


def test_cached_mnrl_gradients_equal_mnrl():
    torch.manual_seed(0)
    lin = torch.nn.Sequential(torch.nn.Linear(12, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8)).double()
    vocab = {f"t{i}": torch.randn(12, dtype=torch.float64) for i in range(40)}

    def embed(texts):
        return lin(torch.stack([vocab[t] for t in texts]))

    cols = [[f"t{i}" for i in range(10)], [f"t{i}" for i in range(10, 20)], [f"t{i}" for i in range(20, 30)]]
    for symmetric in (False, True):
        lin.zero_grad()
        full = MultipleNegativesRankingLoss(symmetric=symmetric)([embed(c) for c in cols])
        full.backward()
        g_full = [p.grad.clone() for p in lin.parameters()]
        lin.zero_grad()
        cached = CachedMultipleNegativesRankingLoss(symmetric=symmetric, mini_batch_size=3).step(embed, cols)
        assert cached.item() == pytest.approx(full.item(), abs=1e-12)
        for g1, p in zip(g_full, lin.parameters()):
            assert (g1 - p.grad).abs().max().item() <= 1e-5


def test_make_loss_names_and_errors():
    assert isinstance(make_loss("MultipleNegativesRankingLoss"), MultipleNegativesRankingLoss)
    assert isinstance(make_loss("cached_mnrl", {"mini_batch_size": 8}), CachedMultipleNegativesRankingLoss)
    assert isinstance(make_loss("triplet", {"matryoshka_dims": [8, 4]}), MatryoshkaLoss)
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        make_loss("hinge")
    with pytest.raises(ValueError, match="bad parameters"):
        make_loss("triplet", {"scale": 3})
    with pytest.raises(ValueError, match="needs at least 3 text columns"):
        TripletLoss().check_columns(2, "pairs")
