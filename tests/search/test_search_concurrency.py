"""Readers beside writers: processes adding, deleting and compacting one index while other
processes search it, with and without filters. No reader ever fails, and every answer is some
committed state: a batch is all there or all gone, and nothing deleted before a search began
comes back."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sentembed.search import Index

from support import HashEncoder

ROOT = Path(__file__).resolve().parent.parent.parent
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "OMP_NUM_THREADS": "1"}
BATCH = 4  # documents per add; a batch is deleted whole, in one call

COMMON = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from support import HashEncoder
    from sentembed.search import Index
    path, role, name, rounds = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
    BATCH = {batch}
    idx = Index.open(path, HashEncoder(dimension=16))
    log = lambda kind, batch: open(path.parent / kind, "a").write(batch + "\\n")
    lines = lambda kind: set((path.parent / kind).read_text().split()) if (path.parent / kind).exists() else set()
""").format(batch=BATCH)

WRITER = COMMON + textwrap.dedent("""
    mine = []
    for r in range(rounds):
        batch = f"{name}-{r}"
        idx.add([f"doc common {batch} part {j}" for j in range(BATCH)], ids=[f"{batch}-{j}" for j in range(BATCH)],
                metadata=[{"batch": batch, "writer": name}] * BATCH)
        log("added", batch)  # after the commit returned
        mine.append(batch)
        if r % 3 == 2:
            gone = mine.pop(0)
            log("deleting", gone)  # before the commit begins
            idx.delete([f"{gone}-{j}" for j in range(BATCH)])
            log("deleted", gone)
    log("done", name)
""")

COMPACTOR = COMMON + textwrap.dedent("""
    n = 0
    while len(lines("done")) < rounds:  # rounds: here, the number of writers
        idx.compact()
        n += 1
        time.sleep(0.05)
    print(n, "compactions")
""")

READER = COMMON + textwrap.dedent("""
    import random
    rng = random.Random(name)
    searches = 0
    def complete(hits, gone, label):
        counts = {}
        for h in hits:
            counts[h.metadata["batch"]] = counts.get(h.metadata["batch"], 0) + 1
        half = {b: c for b, c in counts.items() if c != BATCH}
        assert not half, (label, "half a batch", half)
        back = set(counts) & gone
        assert not back, (label, "deleted before the search began", back)
        return counts
    while len(lines("done")) < rounds:
        gone, added = lines("deleted"), sorted(lines("added"))
        counts = complete(idx.search("doc common", top_k=10_000), gone, "all")
        assert set(added) - lines("deleting") <= set(counts), "a committed batch is missing"
        if added:
            batch = rng.choice(added)
            hits = idx.search("doc common", top_k=50, where={"batch": batch}, mode=rng.choice(["dense", "hybrid"]))
            got = complete(hits, gone, "where")
            assert set(got) <= {batch}, got
            if batch not in lines("deleting"):
                assert got == {batch: BATCH}, (batch, got)
            writer = batch.split("-")[0]
            complete(idx.search("part", top_k=10_000, where={"writer": writer}, mode="lexical"), gone, "lexical")
        searches += 3
    print(searches, "searches")
""")


@pytest.mark.parametrize("kind,rounds", [("exact", 30), ("hnsw", 15)])  # hnsw: its ANN file is replaced too
def test_readers_never_fail_beside_writers_deleters_and_a_compactor(tmp_path, kind, rounds):
    enc = HashEncoder(dimension=16)
    path = tmp_path / "ix"
    Index.create(path, enc, kind=kind).close()
    scripts = {}
    for role, code in (("writer", WRITER), ("compactor", COMPACTOR), ("reader", READER)):
        scripts[role] = tmp_path / f"{role}.py"
        scripts[role].write_text(code)
    writers = 2

    def spawn(role: str, name: str, n: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, str(scripts[role]), str(path), role, name, str(n)], cwd=ROOT,
                                env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    start = time.monotonic()
    procs = [spawn("writer", f"w{i}", rounds) for i in range(writers)]
    procs += [spawn("compactor", "c", writers), spawn("reader", "r0", writers), spawn("reader", "r1", writers)]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=170)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outs.append((p.args[3], p.returncode, out, err[-3000:]))
    failed = [o for o in outs if o[1] != 0]
    assert not failed, failed
    searches = sum(int(o[2].split()[0]) for o in outs if o[0] == "reader")
    compactions = int(next(o[2] for o in outs if o[0] == "compactor").split()[0])
    assert searches >= 6 and compactions >= 1, outs
    idx = Index.open(path, enc)
    deleted = (tmp_path / "deleted").read_text().split()
    assert len(idx) == (writers * rounds - len(deleted)) * BATCH
    print(f"{searches} searches, {compactions} compactions in {time.monotonic() - start:.1f} s")
