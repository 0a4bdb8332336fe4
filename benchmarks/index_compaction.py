"""Search latency after many small adds: automatic merging against a freshly compacted index.

    python benchmarks/index_compaction.py                 # 1,000 adds of 10 vectors (384-d)
    python benchmarks/index_compaction.py --adds 300      # a quicker look

Every add writes a vector segment. The index merges trailing segments on add
(compaction.py), so it holds about log2(rows) of them; without that, 1,000 adds leave 1,000
segments and a search visits each (issue 21 measured 0.73 s after 750 adds, 0.0055 s after
compaction). What it reports, each a median over --rounds searches of one query, top-10:
- `auto`: the index after the adds, merged automatically as it went;
- `piled`: the same adds with automatic merging switched off (what an index did before);
- `fresh`: the `auto` index after `compact()` (one segment);
- ratios to `fresh` (goal: auto within 2x), segment counts and the seconds the adds took.
Random unit vectors; the machine is shared, so numbers from a busy machine are pessimistic.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from search import StoredVectors  # noqa: E402  (benchmarks/search.py: a stand-in model for ready vectors)


def fill(path: Path, vecs: np.ndarray, adds: int, merge: bool) -> tuple[object, float]:
    import sentembed.search.compaction as compaction
    from sentembed.search import Index

    plan = compaction.merge_plan
    if not merge:
        compaction.merge_plan = lambda segments: 0
    try:
        idx = Index.create(path, StoredVectors(vecs.shape[1]))
        start = time.perf_counter()
        for part in np.array_split(vecs, adds):
            idx.add(["x"] * len(part), vectors=part)
        return idx, time.perf_counter() - start
    finally:
        compaction.merge_plan = plan


def latency(idx, queries: np.ndarray, rounds: int) -> float:
    idx.search(queries[0], top_k=10)  # first search maps the files
    times = []
    for r in range(rounds):
        start = time.perf_counter()
        idx.search(queries[r % len(queries)], top_k=10)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--adds", type=int, default=1000)
    p.add_argument("--batch", type=int, default=10, help="vectors per add")
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--rounds", type=int, default=50)
    a = p.parse_args()
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((a.adds * a.batch, a.dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    queries = rng.standard_normal((16, a.dim)).astype(np.float32)
    out: dict[str, object] = {"adds": a.adds, "batch": a.batch, "dim": a.dim}
    with tempfile.TemporaryDirectory(prefix="sentembed-compaction-") as tmp:
        auto, auto_add = fill(Path(tmp) / "auto", vecs, a.adds, merge=True)
        out["auto"] = {"seconds": latency(auto, queries, a.rounds), "segments": auto.info()["segments"], "add_seconds": auto_add}
        piled, piled_add = fill(Path(tmp) / "piled", vecs, a.adds, merge=False)
        out["piled"] = {"seconds": latency(piled, queries, a.rounds), "segments": piled.info()["segments"],
                        "add_seconds": piled_add}
        piled.close()
        auto.compact()
        out["fresh"] = {"seconds": latency(auto, queries, a.rounds), "segments": auto.info()["segments"]}
        auto.close()
    fresh = out["fresh"]["seconds"]
    out["auto_vs_fresh"] = out["auto"]["seconds"] / fresh
    out["piled_vs_fresh"] = out["piled"]["seconds"] / fresh
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
