"""Evaluators on stand-in encoders (hand-checked) and on real-model slices against the reference."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr

from sentembed.evaluation import (ParaphraseMiningEvaluator, RetrievalEvaluator, STSEvaluator, TripletEvaluator,
                                  read_beir, retrieval_metrics)


class TableEncoder:
    """Returns fixed vectors per text: evaluators can then be checked by hand."""

    def __init__(self, table: dict[str, list[float]], similarity: str = "cosine"):
        self.table = {k: np.asarray(v, np.float32) for k, v in table.items()}
        self.similarity_fn_name = similarity
        self.dimension = len(next(iter(self.table.values())))
        self.normalizes = False
        self.name = "table"

    def encode(self, texts, **kw):
        return np.stack([self.table[t] for t in texts])


class Hash:
    similarity_fn_name, dimension, normalizes, name = "cosine", 16, True, "hash"

    def encode(self, texts, **kw):
        out = []
        for t in texts:
            seed = int.from_bytes(hashlib.sha1(t.encode()).digest()[:4], "little")
            out.append(np.random.default_rng(seed).standard_normal(16))
        return np.asarray(out, np.float32)


def test_sts_evaluator_matches_scipy_by_hand():
    rng = np.random.default_rng(0)
    s1 = [f"a{i}" for i in range(30)]
    s2 = [f"b{i}" for i in range(30)]
    gold = rng.uniform(0, 5, 30)
    enc = Hash()
    res = STSEvaluator(s1, s2, gold)(enc)
    e1, e2 = enc.encode(s1).astype(np.float64), enc.encode(s2).astype(np.float64)
    cos = (e1 * e2).sum(1) / np.linalg.norm(e1, axis=1) / np.linalg.norm(e2, axis=1)
    assert res["spearman_cosine"] == pytest.approx(spearmanr(gold, cos)[0], abs=1e-12)
    assert res["pearson_cosine"] == pytest.approx(pearsonr(gold, cos)[0], abs=1e-12)
    man = -np.abs(e1 - e2).sum(1)
    assert res["spearman_manhattan"] == pytest.approx(spearmanr(gold, man)[0], abs=1e-12)
    assert set(res) == {f"{c}_{s}" for c in ("pearson", "spearman") for s in ("cosine", "dot", "euclidean", "manhattan")}


def test_sts_primary_metric_follows_model():
    ev = STSEvaluator(["a", "b", "c"], ["x", "y", "z"], [1, 2, 3])
    ev(TableEncoder({t: [i * i + 1.0, (i % 2) + 0.5] for i, t in enumerate("abcxyz")}, similarity="dot"))
    assert ev.primary_metric == "spearman_dot"
    with pytest.raises(ValueError, match="lengths differ"):
        STSEvaluator(["a"], ["b", "c"], [1.0])


def test_retrieval_evaluator_by_hand():
    # Query q: doc d2 (grade 2) is ranked 2nd behind d1; d3 (grade 1) 3rd.
    table = {"q": [1, 0], "d1": [1, 0.1], "d2": [1, 0.5], "d3": [1, 2], "d4": [-1, 0]}
    enc = TableEncoder(table)
    ev = RetrievalEvaluator({"q": "q"}, {d: d for d in ("d1", "d2", "d3", "d4")}, {"q": {"d2": 2, "d3": 1}},
                            k_values=[1, 2, 10])
    m = ev(enc)
    idcg = 2 + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx((2 / math.log2(3) + 1 / 2) / idcg)
    assert m["mrr@1"] == 0 and m["mrr@2"] == 0.5 and m["recall@2"] == 0.5
    assert ev.primary_metric == "ndcg@10"
    assert list(ev.last_run["q"])[:2] == ["d1", "d2"]


def test_retrieval_evaluator_errors():
    with pytest.raises(ValueError, match="no qrels"):
        RetrievalEvaluator({"q": "x"}, {"d": "y"}, {})
    with pytest.raises(ValueError, match="empty"):
        RetrievalEvaluator({"q": "x"}, {}, {"q": {"d": 1}})
    with pytest.raises(ValueError, match="no text"):
        RetrievalEvaluator({}, {"d": "y"}, {"q": {"d": 1}})


def test_ignore_identical_ids():
    enc = TableEncoder({"a": [1, 0], "b": [0.9, 0.1]})
    ev = RetrievalEvaluator({"a": "a"}, {"a": "a", "b": "b"}, {"a": {"b": 1}}, k_values=[1], ignore_identical_ids=True)
    assert ev(enc)["mrr@1"] == 1.0


def test_triplet_evaluator_by_hand():
    enc = TableEncoder({"a": [1, 0], "p": [1, 0.2], "n": [0, 1], "p2": [0, 1], "n2": [1, 0.1]})
    res = TripletEvaluator([("a", "p", "n"), ("a", "p2", "n2")])(enc)
    assert res["cosine_accuracy"] == 0.5 and res["euclidean_accuracy"] == 0.5


def test_paraphrase_mining_average_precision_by_hand():
    # Pairs by cosine: (s1,s2) 1.0 dup, then (s3,s4) ~0.99 not dup, then (s1,s3)/(s2,s3) ...
    enc = TableEncoder({"1": [1, 0, 0], "2": [1, 0, 0], "3": [0, 1, 0.1], "4": [0, 1, 0.0], "5": [0, 0, 1]})
    ev = ParaphraseMiningEvaluator({k: k for k in "12345"}, [("1", "2"), ("3", "5")], top_k=1)
    res = ev(enc)
    pairs = ev.mine(enc.encode(list("12345")), "cosine")
    assert pairs[0][1:] == (0, 1) and pairs[1][1:] == (2, 3)
    ranks = [r for r, (_, a, b) in enumerate(pairs, 1) if (a, b) in {(0, 1), (2, 4)}]
    expected = sum((n + 1) / r for n, r in enumerate(ranks)) / 2
    assert res["average_precision"] == pytest.approx(expected)
    assert res["f1"] > 0


@pytest.mark.real_model
@pytest.mark.slow
def test_sts_slice_matches_reference(real_encoder, reference_real, stsb_dev):
    from sentence_transformers.evaluation import EmbeddingSimilarityEvaluator

    a, b, s = (x[:150] for x in stsb_dev)
    ours = STSEvaluator(a, b, s)(real_encoder)
    ref = EmbeddingSimilarityEvaluator(a, b, [x / 5 for x in s])(reference_real)
    assert ours["spearman_cosine"] == pytest.approx(ref["spearman_cosine"], abs=2e-5)
    assert ours["pearson_cosine"] == pytest.approx(ref["pearson_cosine"], abs=2e-5)


@pytest.mark.real_model
@pytest.mark.slow
def test_scifact_slice_matches_independent_ranking(real_encoder, reference_real, data_dir):
    """8 test queries over their judged documents plus 24 others: our evaluator on our encoder
    against the reference model's embeddings ranked by NumPy and scored by pytrec_eval (or by
    our metric code when pytrec_eval is absent)."""
    data = read_beir(data_dir / "scifact", "test")
    qids = list(data.qrels)[:8]
    judged = {d for q in qids for d in data.qrels[q]}
    others = [d for d in data.corpus if d not in judged][:24]
    corpus = {d: data.corpus[d][:600] for d in list(judged) + others}  # short docs keep it quick
    qrels = {q: data.qrels[q] for q in qids}
    ev = RetrievalEvaluator({q: data.queries[q] for q in qids}, corpus, qrels, k_values=[1, 3, 10])
    ours = ev(real_encoder)
    dids = list(corpus)
    qe = reference_real.encode([data.queries[q] for q in qids], normalize_embeddings=True)
    de = reference_real.encode([corpus[d] for d in dids], normalize_embeddings=True)
    scores = qe @ de.T
    run = {q: {dids[j]: float(scores[i, j]) for j in range(len(dids))} for i, q in enumerate(qids)}
    try:
        import pytrec_eval

        ref = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.3"}).evaluate(run)
        expected_ndcg = np.mean([r["ndcg_cut_10"] for r in ref.values()])
        expected_recall = np.mean([r["recall_3"] for r in ref.values()])
    except ImportError:
        m = retrieval_metrics(run, qrels, [3, 10])
        expected_ndcg, expected_recall = m["ndcg@10"], m["recall@3"]
    assert ours["ndcg@10"] == pytest.approx(expected_ndcg, abs=1e-4)
    assert ours["recall@3"] == pytest.approx(expected_recall, abs=1e-4)
    assert 0.3 < ours["ndcg@10"] <= 1.0
