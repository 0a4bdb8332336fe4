"""`sentembed eval sts|retrieval|triplets` end to end with a stand-in model."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

import sentembed
from sentembed.evaluation.cli import register


class Hash:
    similarity_fn_name, dimension, normalizes, name = "cosine", 16, True, "hash"

    def encode(self, texts, **kw):
        return np.asarray([np.random.default_rng(int.from_bytes(hashlib.sha1(t.encode()).digest()[:4], "little"))
                           .standard_normal(16) for t in texts], np.float32)


@pytest.fixture
def app(monkeypatch):
    monkeypatch.setattr(sentembed, "load", lambda name, **kw: Hash(), raising=False)
    a = typer.Typer()
    register(a)
    return a


def invoke(app, *args):
    res = CliRunner().invoke(app, [str(x) for x in args])
    return res


def test_eval_sts_table_and_json(app, tmp_path):
    p = tmp_path / "sts.csv"
    p.write_text("".join(f"g\tf\ty\t{i}\t{i % 5}.0\tsentence {i}\tother {i}\n" for i in range(12)))
    res = invoke(app, "eval", "sts", p, "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert "spearman_cosine" in res.output and "<- primary" in res.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["primary_metric"] == "spearman_cosine" and -1 <= data["metrics"]["spearman_cosine"] <= 1


def test_eval_retrieval_split_and_missing_qrels(app, tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n" for i in range(6)))
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "doc 1"}\n')
    (tmp_path / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    res = invoke(app, "eval", "retrieval", tmp_path, "--split", "dev", "--k", "1,5", "-o", tmp_path / "r.json")
    assert res.exit_code == 0, res.output
    assert set(json.loads((tmp_path / "r.json").read_text())["metrics"]) >= {"ndcg@5", "mrr@1", "recall@5"}
    res = invoke(app, "eval", "retrieval", tmp_path)
    assert res.exit_code != 0 and "split 'test'" in str(res.exception)


def test_eval_triplets_bad_line(app, tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"anchor": "a", "positive": "b", "negative": "c"}\nnot json\n')
    res = invoke(app, "eval", "triplets", p)
    assert res.exit_code != 0 and "t.jsonl:2" in str(res.exception)
    p.write_text('{"anchor": "a", "positive": "b", "negative": "c"}\n')
    res = invoke(app, "eval", "triplets", p)
    assert res.exit_code == 0 and "cosine_accuracy" in res.output


def test_eval_retrieval_rerank_scores_the_reranked_run(tmp_path, monkeypatch):
    """--rerank ranks through the index (dense by default) and reorders each query's best
    --rerank-top-k by the cross-encoder: with every document reranked, the metrics are those
    of sentence-transformers' CrossEncoder ranking the whole corpus."""
    from sentence_transformers import CrossEncoder
    from support import HashEncoder, build_cross_encoder

    from sentembed.cli import app as full_app
    from sentembed.evaluation import RetrievalEvaluator

    corpus = {f"d{i}": t for i, t in enumerate(["a man is eating food", "the dog runs in the park", "stocks fell today",
                                                 "a woman plays the guitar", "interest rates rose today",
                                                 "a cat sits on the table"])}
    queries = {"q1": "a man eating", "q2": "the market fell", "q3": "a dog in the park"}
    qrels = {"q1": {"d0": 1}, "q2": {"d2": 1, "d4": 1}, "q3": {"d1": 1}}
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                                   for k, v in corpus.items()))
    (tmp_path / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in queries.items()))
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, docs in qrels.items() for d in docs))
    ce = build_cross_encoder(tmp_path / "ce")
    monkeypatch.setattr(sentembed, "load", lambda name, **kw: HashEncoder(dimension=32))
    out = tmp_path / "r.json"
    res = CliRunner().invoke(full_app, ["eval", "retrieval", str(tmp_path), "--rerank", str(ce), "--rerank-top-k",
                                        str(len(corpus)), "--k", "1,3", "--chunk-tokens", "none", "-o", str(out)])
    assert res.exit_code == 0, res.output + repr(res.exception)
    reference = CrossEncoder(str(ce), device="cpu")

    def reference_run(enc, qs, docs, k):
        ids = list(docs)
        run = {}
        for q, text in qs.items():
            scores = reference.predict([(text, docs[d]) for d in ids])
            run[q] = {ids[i]: float(scores[i]) for i in np.argsort(-scores, kind="stable")[:k]}
        return run

    expected = RetrievalEvaluator(queries, corpus, qrels, k_values=[1, 3], retriever=reference_run)(None)
    report = json.loads(out.read_text())
    assert report["metrics"] == pytest.approx(expected) and "reranked by" in report["model"]
    for alone in (["--rerank-top-k", "5"], ["--rerank-alpha", "0.5"]):
        res = CliRunner().invoke(full_app, ["eval", "retrieval", str(tmp_path), *alone])
        assert res.exit_code != 0 and "--rerank-top-k and --rerank-alpha need --rerank" in res.output
    res = CliRunner().invoke(full_app, ["eval", "retrieval", str(tmp_path), "--rerank", str(tmp_path / "none")])
    assert res.exit_code != 0 and "--rerank:" in res.output
