"""The compiled-package directory stays under its byte limit, least recently used first."""
from __future__ import annotations

import os

from sentembed.backends import compiled


def _package(directory, name: str, mb: int, used: float):
    path = directory / f"int8-{name}.pt2"
    with open(path, "wb") as f:
        f.truncate(mb << 20)
    os.utime(path, (used, used))
    return path


def test_least_recently_used_packages_go_first_and_the_new_one_stays(tmp_path):
    old = _package(tmp_path, "old", 100, 1_000)
    recent = _package(tmp_path, "recent", 100, 3_000)
    middle = _package(tmp_path, "middle", 100, 2_000)
    new = _package(tmp_path, "new", 150, 500)  # just written, with an older date than the others
    other = tmp_path / "notes.txt"
    other.write_text("not a package")
    removed = compiled.prune(tmp_path, keep=new, limit=300 << 20)
    assert removed == [middle, old]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8-new.pt2", "int8-recent.pt2", "notes.txt"]
    assert compiled.prune(tmp_path, keep=new, limit=100 << 20) == [recent]  # over the limit alone: kept
    assert new.exists()


def test_under_the_limit_nothing_is_removed(tmp_path):
    paths = [_package(tmp_path, str(i), 10, 1_000 + i) for i in range(5)]
    assert compiled.prune(tmp_path, keep=paths[0]) == []
    assert all(p.exists() for p in paths)
