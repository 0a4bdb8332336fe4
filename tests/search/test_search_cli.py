"""The search commands end to end, with a stand-in model behind `sentembed.load`."""
from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

import sentembed
from sentembed.search.cli import register, table

from support import HashEncoder


@pytest.fixture
def app(monkeypatch):
    enc = HashEncoder(dimension=32)
    monkeypatch.setattr(sentembed, "load", lambda name, **kw: enc, raising=False)
    a = typer.Typer()
    register(a)
    return a


@pytest.fixture
def corpus(tmp_path):
    p = tmp_path / "docs.jsonl"
    rows = [{"id": f"d{i}", "text": t, "lang": "en" if i % 2 == 0 else "de"} for i, t in
            enumerate(["a cat sat on the mat", "die katze", "stocks fell today", "der hund", "dogs bark loudly"])]
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def run(app, *args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output + repr(res.exception)
    return res.output


def test_index_commands(app, tmp_path, corpus):
    ix = tmp_path / "ix"
    run(app, "index", "create", ix)
    assert "added" in run(app, "index", "add", ix, corpus, "--id-field", "id", "--batch", "2")
    out = run(app, "index", "search", ix, "cat on the mat", "-k", "2", "--output", tmp_path / "hits.json")
    assert "d0" in out
    hits = json.loads((tmp_path / "hits.json").read_text())
    assert hits[0]["id"] == "d0" and hits[0]["metadata"] == {"lang": "en"}
    run(app, "index", "search", ix, "cat", "--where", '{"lang": "de"}', "-o", tmp_path / "de.json")
    assert {h["id"] for h in json.loads((tmp_path / "de.json").read_text())} == {"d1", "d3"}
    assert "deleted 1" in run(app, "index", "delete", ix, "d0")
    run(app, "index", "info", ix, "-o", tmp_path / "info.json")
    assert json.loads((tmp_path / "info.json").read_text())["count"] == 4


def test_one_shot_search_mine_cluster_tag(app, tmp_path, corpus):
    out = run(app, "search", "cat mat", "--corpus", corpus, "-k", "1", "-o", tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text())[0]["text"] == "a cat sat on the mat"
    lines = tmp_path / "lines.txt"
    lines.write_text("the cat sat\nthe cat sat down\nbond yields rose\n\n")
    run(app, "mine", lines, "-k", "1", "-o", tmp_path / "m.json")
    assert json.loads((tmp_path / "m.json").read_text())[0]["text_i"] == "the cat sat"
    run(app, "cluster", lines, "--threshold", "0.5", "--min-size", "2", "-o", tmp_path / "c.json")
    assert len(json.loads((tmp_path / "c.json").read_text())[0]) == 2
    run(app, "cluster", lines, "--kmeans", "2", "-o", tmp_path / "k.json")
    concepts = tmp_path / "concepts.jsonl"
    concepts.write_text('{"term": "cat"}\n{"term": "bond yields"}\n')
    run(app, "tag", lines, concepts, "-k", "1", "-o", tmp_path / "t.json")
    assert json.loads((tmp_path / "t.json").read_text())[2]["tags"][0]["concept"] == "bond yields"


def test_malformed_jsonl_names_line(app, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": oops}\n')
    res = CliRunner().invoke(app, ["search", "x", "--corpus", str(bad)])
    assert res.exit_code != 0 and "bad.jsonl:2" in res.output


def test_table_cuts_long_cells():
    out = table([[1, "x" * 500]], ["n", "text"], width=40)
    assert max(len(line) for line in out.splitlines()) <= 40 and "…" in out


def test_chunked_index_modes_and_upgrade(app, tmp_path, corpus):
    ix = tmp_path / "ix"
    long = tmp_path / "long.jsonl"
    text = "The harbour was quiet. " * 10 + "A zeppelin appeared over the cliffs at dawn."
    long.write_text(json.dumps({"id": "long", "text": text}) + "\n")
    run(app, "index", "create", ix, "--chunk-tokens", "8", "--chunk-overlap", "2")
    run(app, "index", "add", ix, corpus, "--id-field", "id")
    run(app, "index", "add", ix, long, "--id-field", "id")
    run(app, "index", "search", ix, "zeppelin", "--mode", "lexical", "-o", tmp_path / "lex.json")
    hits = json.loads((tmp_path / "lex.json").read_text())
    assert [h["id"] for h in hits] == ["long"] and "zeppelin" in hits[0]["passage"]
    assert hits[0]["passage"] == text[hits[0]["span"][0]:hits[0]["span"][1]] != text
    run(app, "index", "search", ix, "cat", "--mode", "hybrid", "--alpha", "0.5", "-o", tmp_path / "hyb.json")
    assert json.loads((tmp_path / "hyb.json").read_text())[0]["id"] == "d0"
    for bad in (["--mode", "sparse"], ["--mode", "hybrid", "--alpha", "2"]):
        res = CliRunner().invoke(app, ["index", "search", str(ix), "cat", *bad])
        assert res.exit_code != 0 and ("valid modes" in res.output or "alpha" in res.output)
    res = CliRunner().invoke(app, ["index", "create", str(tmp_path / "bad"), "--chunk-tokens", "4", "--chunk-overlap", "4"])
    assert res.exit_code != 0 and "must be smaller than chunk_tokens" in res.output
    assert "already up to date" in run(app, "index", "upgrade", ix)


def test_one_shot_search_modes(app, tmp_path, corpus):
    run(app, "search", "stocks", "--corpus", corpus, "--mode", "lexical", "-o", tmp_path / "l.json")
    hits = json.loads((tmp_path / "l.json").read_text())
    assert [h["id"] for h in hits] == ["2"] and hits[0]["text"] == "stocks fell today"
    run(app, "search", "stocks", "--corpus", corpus, "--mode", "hybrid", "-k", "2", "-o", tmp_path / "h.json")
    assert json.loads((tmp_path / "h.json").read_text())[0]["id"] == "2"


def _fails_in_one_line(app, *args, expect: str) -> str:
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code != 0 and expect in res.output, res.output
    assert "Traceback" not in res.output and not isinstance(res.exception, (KeyError, ValueError)), res.output
    return res.output


def test_index_errors_are_one_line(app, tmp_path, corpus):
    ix = tmp_path / "ix"
    run(app, "index", "create", ix)
    run(app, "index", "add", ix, corpus, "--id-field", "id")
    _fails_in_one_line(app, "index", "delete", ix, "d0", "nope", expect="nope")
    for where, expect in (('{"lang": {}}', "empty dict"), ('{"n": 1180591620717411303424}', "64 bits"),
                          ("{not json", "not JSON"), ('{"lang": {"$near": 1}}', "unknown operator")):
        _fails_in_one_line(app, "index", "search", ix, "cat", "--where", where, expect=expect)
    _fails_in_one_line(app, "index", "add", ix, corpus, "--id-field", "id", expect="already in the index")
    assert "deleted 1" in run(app, "index", "delete", ix, "d0")


def test_index_add_input_errors_name_file_and_line(app, tmp_path):
    ix = tmp_path / "ix"
    run(app, "index", "create", ix)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"fine line\ncaf\xe9 au lait\n")
    _fails_in_one_line(app, "index", "add", ix, bad, expect="bad.txt:2: invalid UTF-8")
    null_id = tmp_path / "ids.jsonl"
    null_id.write_text('{"id": "a", "text": "x"}\n{"id": null, "text": "y"}\n')
    _fails_in_one_line(app, "index", "add", ix, null_id, "--id-field", "id", expect="ids.jsonl:2: no 'id' value")


def test_relative_model_path_works_from_anywhere(tiny_model, tmp_path, monkeypatch):
    """A real (tiny) model given by a relative path: the index loads it from another directory."""
    import shutil

    from sentembed.cli import app as real_app

    shutil.copytree(tiny_model, tmp_path / "work" / "model")
    monkeypatch.chdir(tmp_path / "work")
    res = CliRunner().invoke(real_app, ["index", "create", "ix", "--model", "model"])
    assert res.exit_code == 0, res.output
    docs = tmp_path / "work" / "docs.txt"
    docs.write_text("a cat sat on the mat\nstocks fell today\n")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    res = CliRunner().invoke(real_app, ["index", "add", "../work/ix", "../work/docs.txt"])
    assert res.exit_code == 0, res.output
    res = CliRunner().invoke(real_app, ["index", "search", "../work/ix", "cat on a mat", "-k", "1"])
    assert res.exit_code == 0 and "a cat sat" in res.output, res.output


def test_index_search_and_one_shot_search_rerank(app, tmp_path, corpus):
    """--rerank: the hits retrieved, reordered by sentence-transformers' scores of their passages."""
    import numpy as np
    from sentence_transformers import CrossEncoder

    from support import build_cross_encoder

    ce = build_cross_encoder(tmp_path / "ce")
    reference = CrossEncoder(str(ce), device="cpu")
    ix = tmp_path / "ix"
    run(app, "index", "create", ix)
    run(app, "index", "add", ix, corpus, "--id-field", "id")
    for args in (["index", "search", ix, "a cat"], ["search", "a cat", "--corpus", corpus]):
        run(app, *args, "-k", "4", "-o", tmp_path / "plain.json")
        retrieved = json.loads((tmp_path / "plain.json").read_text())
        run(app, *args, "-k", "2", "--rerank", ce, "--rerank-top-k", "4", "-o", tmp_path / "reranked.json")
        reranked = json.loads((tmp_path / "reranked.json").read_text())
        scores = reference.predict([("a cat", h["passage"]) for h in retrieved])
        best = np.argsort(-scores, kind="stable")[:2]
        assert [h["id"] for h in reranked] == [retrieved[i]["id"] for i in best]
        np.testing.assert_allclose([h["score"] for h in reranked], scores[best], atol=1e-5)
    _fails_in_one_line(app, "index", "search", ix, "cat", "-k", "3", "--rerank", ce, "--rerank-top-k", "2",
                       expect="rerank_top_k must be an integer >= top_k (3)")
    for alone in (["--rerank-top-k", "5"], ["--rerank-alpha", "0.5"]):
        _fails_in_one_line(app, "index", "search", ix, "cat", *alone, expect="--rerank-top-k and --rerank-alpha need --rerank")
    _fails_in_one_line(app, "index", "search", ix, "cat", "--rerank", tmp_path / "nowhere", expect="--rerank:")
    res = CliRunner().invoke(app, ["search", "cat", "--corpus", str(corpus), "--rerank", str(ce), "--rerank-top-k", "0"])
    assert res.exit_code != 0 and "--rerank-top-k" in res.output
