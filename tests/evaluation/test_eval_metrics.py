"""Retrieval metrics: hand-computed graded cases, trec_eval tie order, and pytrec_eval itself."""
from __future__ import annotations

import math
import random

import pytest

from sentembed.evaluation.metrics import query_metrics, rank, retrieval_metrics

L2 = math.log2

# q1: judged A=2, B=1, D=1, C=0; ranked X(unjudged), B, A, C, D -> grades 0, 1, 2, 0, 1.
RUN = {"q1": {"X": 0.9, "B": 0.8, "A": 0.7, "C": 0.6, "D": 0.5}}
QRELS = {"q1": {"A": 2, "B": 1, "C": 0, "D": 1}}


def test_graded_case_by_hand():
    m = retrieval_metrics(RUN, QRELS, [1, 3, 5])
    idcg3 = 2 / L2(2) + 1 / L2(3) + 1 / L2(4)
    assert m["ndcg@3"] == pytest.approx((1 / L2(3) + 2 / L2(4)) / idcg3)
    assert m["ndcg@5"] == pytest.approx((1 / L2(3) + 2 / L2(4) + 1 / L2(6)) / idcg3)
    assert m["ndcg@1"] == 0.0
    assert m["mrr@1"] == 0.0 and m["mrr@3"] == 0.5
    assert m["map@3"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert m["map@5"] == pytest.approx((1 / 2 + 2 / 3 + 3 / 5) / 3)
    assert m["recall@3"] == pytest.approx(2 / 3) and m["recall@5"] == 1.0
    assert m["precision@3"] == pytest.approx(2 / 3) and m["precision@5"] == pytest.approx(3 / 5)
    assert m["accuracy@1"] == 0.0 and m["accuracy@3"] == 1.0


def test_ideal_dcg_cut_at_k_and_graded_gain_is_linear():
    # Only grade-3 doc retrieved first, two more relevant docs unretrieved.
    m = query_metrics(["a"], {"a": 3, "b": 1, "c": 1}, [1, 2])
    assert m["ndcg@1"] == 1.0  # ideal at 1 is also 3/log2(2)
    assert m["ndcg@2"] == pytest.approx(3 / (3 + 1 / L2(3)))


def test_missing_query_scores_zero_and_counts_in_mean():
    m = retrieval_metrics(RUN, {**QRELS, "q2": {"E": 1}}, [5])
    assert m["recall@5"] == pytest.approx(0.5)


def test_ties_broken_by_descending_doc_id_like_trec_eval():
    assert rank({"a": 0.5, "b": 0.5, "c": 0.7}) == ["c", "b", "a"]
    assert retrieval_metrics({"q": {"a": 0.5, "b": 0.5}}, {"q": {"b": 1}}, [1])["mrr@1"] == 1.0


def test_errors():
    with pytest.raises(ValueError, match="qrels"):
        retrieval_metrics(RUN, {}, [1])
    with pytest.raises(ValueError, match="positive"):
        retrieval_metrics(RUN, QRELS, [0])


def test_agrees_with_pytrec_eval_on_random_graded_runs_with_ties():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rnd = random.Random(7)
    qrels, run = {}, {}
    for q in range(60):
        docs = [f"d{i}" for i in range(50)]
        qrels[f"q{q}"] = {d: rnd.choice([0, 1, 1, 2, 3]) for d in rnd.sample(docs, rnd.randint(1, 9))}
        run[f"q{q}"] = {d: round(rnd.random(), 2) for d in rnd.sample(docs, 30)}  # rounding makes ties
    ks = [1, 3, 5, 10, 30]
    measures = {f"{m}.{','.join(map(str, ks))}" for m in ("ndcg_cut", "map_cut", "recall", "P")} | {"recip_rank"}
    ref = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    ours = retrieval_metrics(run, qrels, ks)
    mean = lambda key: sum(r[key] for r in ref.values()) / len(ref)
    for k in ks:
        assert ours[f"ndcg@{k}"] == pytest.approx(mean(f"ndcg_cut_{k}"), abs=1e-12)
        assert ours[f"map@{k}"] == pytest.approx(mean(f"map_cut_{k}"), abs=1e-12)
        assert ours[f"recall@{k}"] == pytest.approx(mean(f"recall_{k}"), abs=1e-12)
        assert ours[f"precision@{k}"] == pytest.approx(mean(f"P_{k}"), abs=1e-12)
    assert ours["mrr@30"] == pytest.approx(mean("recip_rank"), abs=1e-12)  # the whole run has 30 docs
