"""An index file's CRC-32 summed in parts on several threads is zlib's CRC-32 of the whole file."""
from __future__ import annotations

import os
import zlib

from hypothesis import given, settings
from hypothesis import strategies as st

from sentembed.search import integrity


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_combined_crcs_are_the_crc_of_the_concatenation(a, b):
    assert integrity.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_a_file_summed_in_parts_has_the_whole_files_crc(tmp_path, monkeypatch):
    data = os.urandom(1_000_003)  # parts of unequal length
    path = tmp_path / "seg-000001.f32"
    path.write_bytes(data)
    monkeypatch.setattr(integrity, "PART", 1000)
    monkeypatch.setattr(integrity, "CHUNK", 4096)  # several reads a part
    for cores in (1, 2, 3, 7):
        monkeypatch.setattr(integrity, "_cores", lambda: cores)
        assert integrity.checksum(path) == f"{zlib.crc32(data):08x}"
    expected = integrity.checksum(path)
    damaged = bytearray(data)
    damaged[700_001] ^= 0x10  # a bit in the last part
    path.write_bytes(bytes(damaged))
    assert "is damaged" in integrity.check(path, path, expected)
    (tmp_path / "empty").write_bytes(b"")
    assert integrity.checksum(tmp_path / "empty") == f"{zlib.crc32(b''):08x}"
