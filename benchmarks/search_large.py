"""Exact search on a corpus larger than memory: 10M x 768 through the index's int8 copy.

    python benchmarks/search_large.py --dir /var/tmp          # 10M x 768: 39.4 GB of disk, about 10 minutes
    python benchmarks/search_large.py --rows 1000000 --dir /var/tmp   # a quicker look

The bulk path a user takes with vectors made elsewhere, `Index.add(texts,
vectors=np.load("emb.npy", mmap_mode="r"))`, here with random unit vectors made a block at a
time as the index reads them (`RandomUnitRows`), so the disk holds the index alone: its fp32
segment (30.7 GB at 10M x 768) and int8 copy (7.8 GB). Three processes, one after another:

1. build: one `Index.add` of every row (one commit); wall time, peak RSS, disk use;
2. search, fresh: open the index, a first search (reads every file once for its checksums),
   then --rounds searches of --queries random unit queries, top --k, exact: seconds, queries/s
   and the peak RSS of the search alone (VmHWM reset after the first search; the int8 copy's
   pages count, as they are mapped) against the goal, <= 12 GB;
3. check: float64 brute force streaming the index's own fp32 segment file, a block at a time:
   the index's top-k must be its top-k (a differing id is reported with its score gap).

Prints the CPU, then one JSON line a phase (--output: all of them in one file).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from search import StoredVectors, queries, status_kb  # noqa: E402  (benchmarks/search.py)

BLOCK = 65536  # rows read from the segment file at once by the brute force


class RandomUnitRows:
    """n x d random unit rows, each slice made from its start on demand: an array-like that is
    never whole in memory or on disk (what `Index.add` reads, as it reads a memory map)."""

    ndim = 2

    def __init__(self, n: int, d: int, seed: int = 0) -> None:
        self.shape, self.seed = (n, d), seed

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        start, stop, _ = rows.indices(self.shape[0])
        x = np.random.default_rng([self.seed, start]).standard_normal((stop - start, self.shape[1]), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)


def found_file(index: str | Path) -> Path:
    return Path(f"{index}.found.npy")  # the search's ids, for the check


def build(a) -> dict:
    from sentembed.search import Index
    from sentembed.search.store import disk_size

    t = time.perf_counter()
    idx = Index.create(a.path, StoredVectors(a.dim))
    idx.add(["v"] * a.rows, vectors=RandomUnitRows(a.rows, a.dim))  # ids: the row numbers
    idx.close()
    files = {p.name: p.stat().st_size for p in sorted(Path(a.path).rglob("*")) if p.is_file()}
    return {"phase": "build", "rows": a.rows, "dim": a.dim, "seconds": round(time.perf_counter() - t, 1),
            "peak_rss_gb": round(status_kb("VmHWM") / 2**20, 2), "disk_gb": round(disk_size(Path(a.path)) / 1e9, 2),
            "files_gb": {name: round(size / 1e9, 3) for name, size in files.items() if size > 1e6}}


def search(a) -> dict:
    import torch

    from sentembed.search import Index

    torch.set_num_threads(a.threads)
    q = queries(a.dim, a.queries)
    t = time.perf_counter()
    idx = Index.open(a.path, StoredVectors(a.dim))
    idx.search_many(q[:1], a.k)
    first = time.perf_counter() - t
    base = status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # Linux: VmHWM from here on is the searches' peak
        f.write("5")
    times, hits = [], None
    for _ in range(a.rounds):
        t = time.perf_counter()
        hits = idx.search_many(q, a.k)
        times.append(time.perf_counter() - t)
    seconds = float(np.median(times))
    np.save(found_file(a.path), np.array([[int(h.id) for h in found] for found in hits]))
    return {"phase": "search", "open_and_first_search_s": round(first, 1), "seconds": [round(s, 2) for s in times],
            "queries_per_s": round(a.queries / seconds, 1), "rss_before_gb": round(base / 2**20, 2),
            "peak_rss_gb": round(status_kb("VmHWM") / 2**20, 2), "goal_peak_rss_gb": 12}


def check(a) -> dict:
    """float64 top-k of every query over the index's segment file, read a block at a time."""
    segments = sorted((Path(a.path) / "vectors").glob("seg-*.f32"))
    assert len(segments) == 1, f"one add writes one segment, found {segments}"
    corpus = np.memmap(segments[0], dtype=np.float32, mode="r").reshape(-1, a.dim)
    q = queries(a.dim, a.queries).astype(np.float64)
    t = time.perf_counter()
    best_s = np.full((len(q), a.k), -np.inf)
    best_i = np.zeros((len(q), a.k), dtype=np.int64)
    for start in range(0, len(corpus), BLOCK):
        s = q @ np.asarray(corpus[start : start + BLOCK], dtype=np.float64).T
        top = np.argpartition(-s, a.k - 1, axis=1)[:, : a.k] if s.shape[1] > a.k else np.broadcast_to(np.arange(s.shape[1]), s.shape)
        all_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], axis=1)
        all_i = np.concatenate([best_i, top + start], axis=1)
        keep = np.argsort(-all_s, axis=1, kind="stable")[:, : a.k]
        best_s, best_i = np.take_along_axis(all_s, keep, 1), np.take_along_axis(all_i, keep, 1)
    found = np.load(found_file(a.path))
    differ = []
    for qi in np.flatnonzero((found != best_i).any(axis=1)):
        scores = q[qi] @ np.asarray(corpus[np.sort(found[qi])], dtype=np.float64).T
        differ.append({"query": int(qi), "kth_float64": float(best_s[qi, -1]), "lowest_found_float64": float(scores.min())})
    return {"phase": "check", "float64_seconds": round(time.perf_counter() - t, 1), "queries": len(q),
            "same_top_k": len(q) - len(differ), "differ": differ}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=100)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", type=Path, default=Path("/var/tmp"), help="where the index goes (removed at the end unless --keep-index)")
    p.add_argument("--keep-index", action="store_true", help="leave the index for a later run (it is reused when there)")
    p.add_argument("--output", type=Path, default=None, help="write the phases' results as JSON here")
    p.add_argument("--phase", choices=["build", "search", "check"], help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.phase:
        print(json.dumps({"build": build, "search": search, "check": check}[a.phase](a)))
        return

    from sentembed.model.cpu import cpu

    path = a.dir / f"sentembed-large-{a.rows}x{a.dim}.index"
    print(f"CPU: {cpu().describe()}; {a.rows:,} x {a.dim} random unit vectors, {a.queries} queries, top-{a.k}, "
          f"{a.threads} threads; fp32 corpus {a.rows * a.dim * 4 / 1e9:.1f} GB", flush=True)
    results = []
    phases = ["search", "check"] if (path / "manifest.json").exists() else ["build", "search", "check"]
    try:
        for phase in phases:
            cmd = [sys.executable, __file__, "--phase", phase, "--path", str(path)] + [
                f"--{k}={getattr(a, k)}" for k in ("rows", "dim", "queries", "k", "threads", "rounds")]
            out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
            results.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    finally:
        if not a.keep_index:
            import shutil

            shutil.rmtree(path, ignore_errors=True)
            found_file(path).unlink(missing_ok=True)
    if a.output:
        a.output.write_text(json.dumps({"cpu": cpu().describe(), "args": {k: str(v) for k, v in vars(a).items()},
                                        "phases": results}, indent=1))


if __name__ == "__main__":
    main()
