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
