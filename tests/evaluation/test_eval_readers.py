"""Readers: exact parsing of the real formats and errors that name file and line."""
from __future__ import annotations

import pytest

from sentembed.evaluation.readers import DataFormatError, beir_doc_text, read_beir, read_jsonl, read_sts, read_triplets


def test_sts_tsv_no_quoting_and_extra_columns(tmp_path):
    p = tmp_path / "sts.csv"
    p.write_text('main\tfile\t2012\t0001\t4.5\tHe said "hi\tShe said "bye"\textra\tcols\n'
                 "main\tfile\t2012\t0002\t0.0\ta\tb\n")
    a, b, s = read_sts(p)
    assert a == ['He said "hi', "a"] and b == ['She said "bye"', "b"] and s == [4.5, 0.0]


def test_sts_errors_name_line(tmp_path):
    p = tmp_path / "sts.csv"
    p.write_text("g\tf\ty\ti\t1.0\ta\tb\ng\tf\ty\ti\tfive\ta\tb\n")
    with pytest.raises(DataFormatError, match=r"sts.csv:2: score"):
        read_sts(p)
    p.write_text("g\tf\ty\ti\t1.0\ta\n")
    with pytest.raises(DataFormatError, match=r"sts.csv:1: expected at least 7"):
        read_sts(p)


def test_real_stsb_dev(data_dir):
    a, b, s = read_sts(data_dir / "stsb" / "sts-dev.csv")
    assert len(a) == len(b) == len(s) == 1500
    assert a[0] == "A man with a hard hat is dancing." and s[0] == 5.0


def _beir(tmp_path, qrels="query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\n"):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text('{"_id": "d1", "title": "T", "text": "body"}\n{"_id": "d2", "title": "", "text": " x "}\n')
    (tmp_path / "queries.jsonl").write_text('{"_id": "q1", "text": "what?"}\n{"_id": "q2", "text": "unjudged"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text(qrels)
    return tmp_path


def test_beir_folder(tmp_path):
    data = read_beir(_beir(tmp_path))
    assert data.corpus == {"d1": "T body", "d2": "x"}
    assert data.queries == {"q1": "what?"} and data.qrels == {"q1": {"d1": 2, "d2": 1}}
    assert beir_doc_text({"title": None, "text": "a"}) == "a"


def test_beir_missing_split_lists_available(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"split 'dev'.*\['test'\]"):
        read_beir(_beir(tmp_path), split="dev")


def test_beir_judged_query_without_text(tmp_path):
    with pytest.raises(DataFormatError, match="not in queries.jsonl"):
        read_beir(_beir(tmp_path, "query-id\tcorpus-id\tscore\nq9\td1\t1\n"))


def test_malformed_json_line_names_file_and_line(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"a": 1}\n\n{"a": 2,}\n')
    with pytest.raises(DataFormatError, match=r"x.jsonl:3: malformed JSON"):
        list(read_jsonl(p))


def test_real_scifact(data_dir):
    data = read_beir(data_dir / "scifact", "test")
    assert len(data.corpus) == 5183 and len(data.queries) == 300
    assert sum(len(v) for v in data.qrels.values()) == 339
    assert len(read_beir(data_dir / "scifact", "train").queries) == 809


def test_triplets(tmp_path):
    p = tmp_path / "t.jsonl"
    p.write_text('{"anchor": "a", "positive": "p", "negative": "n"}\n["a2", "p2", "n2"]\n')
    assert read_triplets(p) == [("a", "p", "n"), ("a2", "p2", "n2")]
    p.write_text('{"anchor": "a", "positive": "p"}\n')
    with pytest.raises(DataFormatError, match="t.jsonl:1: missing key 'negative'"):
        read_triplets(p)
