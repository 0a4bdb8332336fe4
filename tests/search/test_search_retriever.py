"""`eval retrieval --mode`: the evaluator ranks through a temporary index, so it measures what
users of the index get; dense through the index equals the evaluator's own exact ranking."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

import sentembed
from sentembed.evaluation import RetrievalEvaluator
from sentembed.search.retriever import IndexRetriever

from support import HashEncoder

CORPUS = {"d1": "cod and herring are fish of the north sea", "d2": "stocks fell sharply today",
          "d3": "the harbour keeper lit the lamp", "d4": "interest rates rose again", "d5": "a herring gull"}
QUERIES = {"q1": "herring fish", "q2": "stock market fell", "q3": "lighthouse lamp"}
QRELS = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}}


def test_dense_through_the_index_equals_exact_ranking():
    enc = HashEncoder(dimension=32)
    exact = RetrievalEvaluator(QUERIES, CORPUS, QRELS, k_values=[1, 3, 5])(enc)
    via_index = RetrievalEvaluator(QUERIES, CORPUS, QRELS, k_values=[1, 3, 5],
                                   retriever=IndexRetriever(mode="dense", chunk_tokens=None))(enc)
    assert via_index == pytest.approx(exact)


def test_lexical_needs_no_model_and_modes_are_checked():
    ev = RetrievalEvaluator(QUERIES, CORPUS, QRELS, k_values=[1, 3], retriever=IndexRetriever(mode="lexical"))
    result = ev(None)
    assert result["ndcg@3"] > 0.5 and set(ev.last_run["q1"]) == {"d1", "d5"}
    with pytest.raises(ValueError, match="needs a model"):
        IndexRetriever(mode="hybrid")(None, QUERIES, CORPUS, 3)
    with pytest.raises(ValueError, match="valid modes"):
        IndexRetriever(mode="bm25")


def test_eval_retrieval_mode_on_the_command_line(tmp_path, monkeypatch):
    from sentembed.cli import app

    folder = tmp_path / "beir"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "title": "", "text": v}) + "\n"
                                                 for k, v in CORPUS.items()))
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in QUERIES.items()))
    (folder / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(
        f"{q}\t{d}\t1\n" for q, docs in QRELS.items() for d in docs))
    monkeypatch.setattr(sentembed, "load", lambda name, **kw: HashEncoder(dimension=32))
    for mode in ("lexical", "hybrid"):
        out = tmp_path / f"{mode}.json"
        res = CliRunner().invoke(app, ["eval", "retrieval", str(folder), "--mode", mode, "--k", "1,3",
                                       "--chunk-tokens", "none", "-o", str(out)])
        assert res.exit_code == 0, res.output + repr(res.exception)
        assert json.loads(out.read_text())["metrics"]["ndcg@3"] > 0.5
    res = CliRunner().invoke(app, ["eval", "retrieval", str(folder), "--mode", "sparse"])
    assert res.exit_code != 0 and "valid modes" in res.output
