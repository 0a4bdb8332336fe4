"""Damage is found and named: `Index.verify` / `sentembed index verify` and the first search
that opens a damaged file (flipped bytes, same size). A damaged int8 or bf16 copy is set aside
(the search scans fp32, same results, with a warning) and `compact()` writes it again; a
damaged segment refuses the search."""
from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from sentembed.search import Index, compaction, int8_scan, prefilter
from sentembed.search.int8_scan import padded
from sentembed.search.integrity import IndexDamaged
from sentembed.search.view import int8_file, shadow_file

from support import HashEncoder


@pytest.fixture(autouse=True, params=["i8", "bf16"])
def kind(request, monkeypatch):
    """A copy is written and read only where it pays; here the one under test always does, on any CPU."""
    monkeypatch.setattr(prefilter, "bf16_scan_pays", lambda: request.param == "bf16")
    monkeypatch.setattr(int8_scan, "int8_scan_pays", lambda: request.param == "i8")
    written = (int8_file, int8_scan.write_int8) if request.param == "i8" else (shadow_file, prefilter.write_shadow)
    monkeypatch.setattr(compaction, "copies_to_write", lambda: [written])
    return request.param


@pytest.fixture
def built(tmp_path):
    enc = HashEncoder(dimension=16)
    idx = Index.create(tmp_path / "ix", enc)
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((400, 16)).astype(np.float32)
    idx.add([f"t{i}" for i in range(400)], vectors=vecs)
    q = vecs[7] + 0.01
    expected = [(h.id, round(h.score, 5)) for h in idx.search(q, top_k=5)]
    assert expected[0][0] == "7"
    idx.close()
    return tmp_path / "ix", enc, q, expected


def _flip(path, start: int, count: int, value: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[start : start + count] = bytes([value]) * count
    path.write_bytes(bytes(data))


def test_intact_index_verifies(built):
    path, enc, _, _ = built
    assert Index.open(path, enc).verify() == []
    r = CliRunner().invoke(_app(), ["index", "verify", str(path)])
    assert r.exit_code == 0 and "intact" in r.output


def test_damaged_copy_is_set_aside_and_compact_writes_it_again(built, kind):
    path, enc, q, expected = built
    copy = next((path / "vectors").glob(f"*.{kind}"))
    assert len(list((path / "vectors").iterdir())) == 2  # the segment and its one copy
    row_bytes = padded(16) if kind == "i8" else 16 * 2
    _flip(copy, 7 * row_bytes, row_bytes)  # row 7, the best hit, zeroed in the copy: it would be dropped
    problems = Index.open(path, enc).verify()
    assert len(problems) == 1 and copy.name in problems[0] and "damaged" in problems[0]
    with pytest.warns(UserWarning, match=copy.name):
        got = [(h.id, round(h.score, 5)) for h in Index.open(path, enc).search(q, top_k=5)]
    assert got == expected
    r = CliRunner().invoke(_app(), ["index", "verify", str(path)])
    assert r.exit_code == 1 and copy.name in r.output and "Traceback" not in r.output
    idx = Index.open(path, enc)
    with pytest.warns(UserWarning, match=copy.name):
        idx.compact()  # one segment, nothing deleted: only the copy is written again
    assert idx.verify() == []
    got = [(h.id, round(h.score, 5)) for h in idx.search(q, top_k=5)]
    assert got == expected


def test_missing_copy_is_no_damage_unless_recorded(built, kind):
    path, enc, q, expected = built
    copy = next((path / "vectors").glob(f"*.{kind}"))
    copy.unlink()
    assert any("missing" in p and copy.name in p for p in Index.open(path, enc).verify())
    got = [(h.id, round(h.score, 5)) for h in Index.open(path, enc).search(q, top_k=5)]
    assert got == expected
    idx = Index.open(path, enc)
    idx.compact()
    assert copy.is_file() and idx.verify() == []


def test_damaged_segment_refuses_the_search(built):
    path, enc, q, _ = built
    seg = next((path / "vectors").glob("*.f32"))
    _flip(seg, 100, 8, 0x7F)
    assert any(seg.name in p for p in Index.open(path, enc).verify())
    with pytest.raises(IndexDamaged, match=seg.name):
        Index.open(path, enc).search(q, top_k=5)


def _app():
    from sentembed.cli import app

    return app
