"""The `sentembed` command on a tiny model: encode files, compare, describe."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

import sentembed
from sentembed.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tiny_model):
    return sentembed.load(str(tiny_model))


def test_encode_txt_to_npy(tiny_model, model, tmp_path):
    (tmp_path / "in.txt").write_text("first line\nsecond line\n", encoding="utf-8")
    result = runner.invoke(app, ["encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.npy"), "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), model.encode(["first line", "second line"]), atol=1e-6)


def test_encode_takes_dtype_and_quantize(tiny_model, tmp_path, monkeypatch):
    """--dtype and --quantize load the model as `sentembed.load` does; a wrong name is refused
    naming the option, before anything loads."""
    monkeypatch.setenv("SENTEMBED_COMPILE", "0")  # int8 eager: compiling a tiny graph takes a minute
    (tmp_path / "in.txt").write_text("first line\nsecond line\n", encoding="utf-8")
    for options in (["--dtype", "bfloat16"], ["--quantize", "int8"]):
        out = tmp_path / f"{options[1]}.npy"
        result = runner.invoke(app, ["encode", str(tmp_path / "in.txt"), "-o", str(out), "--model", str(tiny_model),
                                     *options])
        assert result.exit_code == 0, result.output
        want = sentembed.load(str(tiny_model), **{options[0][2:]: options[1]}).encode(["first line", "second line"])
        np.testing.assert_allclose(np.load(out), want, atol=1e-6)
    result = runner.invoke(app, ["encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "x.npy"), "--dtype", "fp8"])
    assert result.exit_code != 0 and "--dtype" in result.output and "fp8" in result.output


def test_encode_jsonl_to_parquet_with_ids(tiny_model, model, tmp_path):
    rows = [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}]
    (tmp_path / "in.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    result = runner.invoke(app, ["encode", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.parquet"),
                                 "--field", "text", "--id-field", "id", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column("id").to_pylist() == ["a", "b"]
    np.testing.assert_allclose(np.array(table.column("embedding").to_pylist()), model.encode(["alpha", "beta"]), atol=1e-6)


def test_encode_reports_bad_input_with_line_numbers(tiny_model, tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"text": broken}\n', encoding="utf-8")
    result = runner.invoke(app, ["encode", str(tmp_path / "bad.jsonl"), "-o", str(tmp_path / "o.npy"), "--field", "text", "--model", str(tiny_model)])
    assert result.exit_code == 1 and "bad.jsonl:2" in result.output
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff\xfe broken\n")
    result = runner.invoke(app, ["encode", str(tmp_path / "bad.txt"), "-o", str(tmp_path / "o.npy"), "--model", str(tiny_model)])
    assert result.exit_code == 1 and "bad.txt:2: invalid UTF-8" in result.output
    assert not (tmp_path / "o.npy").exists()


def test_similarity_and_info(tiny_model, model):
    result = runner.invoke(app, ["similarity", "a cat", "a dog", "--model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    expected = float(model.similarity(model.encode("a cat"), model.encode("a dog"))[0, 0])
    assert result.output.strip() == f"cosine: {expected:.4f}"
    result = runner.invoke(app, ["info", str(tiny_model), "--json"])
    details = json.loads(result.output)
    assert details["dimension"] == model.dimension and details["pooling"] == ["mean"] and details["similarity"] == "cosine"


def test_unknown_model_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("SENTEMBED_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = runner.invoke(app, ["info", "no-such-model"])
    assert result.exit_code == 1 and "Searched" in result.output


def test_encode_refuses_an_output_type_before_any_work(tmp_path):
    (tmp_path / "in.txt").write_text("one\ntwo\n")
    # A model that does not exist: the output's type is checked before the model is looked for.
    result = runner.invoke(app, ["encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / "out.csv"),
                                 "--model", str(tmp_path / "no-such-model")])
    assert result.exit_code != 0
    assert "unsupported output type '.csv'" in result.output


def test_encode_names_file_and_line_of_invalid_utf8_in_a_csv(tiny_model, tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(b"text\nfine\nbad \xff byte\n")
    result = runner.invoke(app, ["encode", str(path), "--field", "text", "-o", str(tmp_path / "out.npy"),
                                 "--model", str(tiny_model)])
    assert result.exit_code != 0
    assert f"{path}:3" in result.output and "UTF-8" in result.output
