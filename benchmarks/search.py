"""Exact and HNSW search: sentembed against sentence-transformers' util.semantic_search.

    python benchmarks/search.py                      # 1M x 768, 100 queries, top-10, 2 threads
    python benchmarks/search.py --rows 200000 --rounds 2 --hnsw-n 50000   # a quicker look

What it reports:
- exact search seconds, same threads, runs alternating, median of --rounds, for
  util.semantic_search (cosine, the reference's score), sentembed's `semantic_search` on the same
  array (fp32 all the way) and sentembed's `Index` holding the same vectors, exact too, twice:
  scanning its int8 copy (int8_scan.py; goal >= 8x the reference) and a bf16 copy written
  beside it for the comparison (prefilter.py); each copy picks the candidates with a proven
  error bound and fp32 re-scores them; the ratios to the reference;
- results agree (same top-10 ids);
- peak memory of each, measured in a fresh process over the same memory-mapped corpus (the
  index over its own files): peak RSS growth during the search / fp32 corpus bytes (goals:
  the index through int8 <= 0.3x, semantic_search <= 1.2x). File pages of the memory maps count
  too, so reading the whole fp32 corpus shows as about 1.0x, the int8 copy as about 0.25x;
- the share of the fp32 GEMM ceiling, measured here on a 2048x768x3072 GEMM;
- HNSW (FAISS, M=32) on the first --hnsw-n rows: queries/s at the smallest efSearch reaching
  recall@10 >= 0.95 against exact, as a ratio to exact search's queries/s on the same rows;
- IVF-PQ as the index builds it, on the first --ivfpq-n rows: recall@10 and queries/s by nprobe;
- a chart of recall@10 against queries/s for both (plots.py), beside the JSON (--output).
The corpus is random unit vectors written to a memory-mapped file in --dir (deleted afterwards).
The machine is shared: keep --rounds small; numbers from a busy machine are pessimistic.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
import plots  # noqa: E402  (benchmarks/plots.py, beside this script)


def make_corpus(path: Path, n: int, d: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    mm = np.memmap(path, dtype=np.float32, mode="w+", shape=(n, d))
    for s in range(0, n, 65536):
        x = rng.standard_normal((min(65536, n - s), d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        mm[s : s + len(x)] = x
    mm.flush()
    del mm


def queries(d: int, nq: int) -> np.ndarray:
    q = np.random.default_rng(1).standard_normal((nq, d), dtype=np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def run_ours(q, corpus, k):
    from sentembed.search import semantic_search

    return semantic_search(q, corpus, top_k=k, score="cosine").indices


class StoredVectors:
    """Stands in for a model when the index is filled with ready vectors: only the probe is encoded."""

    name, dimension, similarity_fn_name, normalizes = "benchmark-vectors", 0, "cosine", True

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    def encode(self, texts):
        return np.ones((len(texts), self.dimension), dtype=np.float32)


def build_index(path: Path, corpus: np.ndarray) -> None:
    from sentembed.search import Index

    idx = Index.create(path, StoredVectors(corpus.shape[1]))
    step = 250_000
    for s in range(0, len(corpus), step):
        rows = corpus[s : s + step]
        idx.add([str(i) for i in range(s, s + len(rows))], vectors=rows)
    idx.close()


def add_bf16_copies(path: Path, d: int) -> None:
    """A bf16 copy beside each segment that has none (no commit names it: the benchmark reads it)."""
    from sentembed.search.prefilter import write_shadow

    for seg in sorted((path / "vectors").glob("*.f32")):
        if not seg.with_suffix(".bf16").exists():
            rows = np.memmap(seg, dtype=np.float32, mode="r").reshape(-1, d)
            write_shadow(seg.with_suffix(".bf16"), [rows])


def open_index(path: Path, d: int, copy: str = "int8"):
    """The index, scanning its int8 copy, or its bf16 one: opened (on a first search) with the
    int8 copy set aside."""
    from sentembed.search import Index, int8_scan

    idx = Index.open(path, StoredVectors(d))
    if copy == "bf16":
        pays = int8_scan.int8_scan_pays
        int8_scan.int8_scan_pays = lambda: False
        try:
            idx.search_many(queries(d, 1), 1)
        finally:
            int8_scan.int8_scan_pays = pays
    return idx


def run_index(q, idx, k):
    return np.array([[int(h.id) for h in hits] for hits in idx.search_many(q, k)])


def run_reference(q, corpus, k):
    import torch
    from sentence_transformers import util

    res = util.semantic_search(torch.from_numpy(q), torch.from_numpy(corpus), top_k=k)
    return np.array([[h["corpus_id"] for h in r] for r in res])


def status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def worker(args) -> None:
    """One search in a fresh process: peak RSS growth over the memory map."""
    import warnings

    import torch

    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    corpus = np.memmap(args.path, dtype=np.float32, mode="r", shape=(args.n, args.d))
    q = queries(args.d, args.nq)
    fn = {"ours": run_ours, "reference": run_reference, "index-int8": run_index, "index-bf16": run_index}[args.worker]
    index = args.worker.startswith("index")
    fn(q, corpus[:1000], args.k) if not index else run_ours(q, corpus[:1000], args.k)  # warm-up on a sliver
    if index:
        from sentembed.search import int8_scan, prefilter

        if args.worker == "index-bf16":
            int8_scan.int8_scan_pays = lambda: False  # this process scans the bf16 copies
        int8_scan.int8_scan_pays(), prefilter.bf16_scan_pays()  # measured once a process: not the search's memory
        corpus = open_index(Path(args.path).with_suffix(".index"), args.d)
    base = status_kb("VmRSS")
    # Reset the peak-RSS mark (Linux: "5" > clear_refs), so VmHWM is the peak of the search alone.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn(q, corpus, args.k)
    print(json.dumps({"base_kb": base, "peak_kb": status_kb("VmHWM")}))


def gemm_ceiling(threads: int, dtype=None) -> float:
    import torch

    from sentembed.search.prefilter import bf16_scores
    from sentembed.vectors import matmul_t

    torch.set_num_threads(threads)
    x, w = torch.randn(2048, 768, dtype=dtype), torch.randn(3072, 768, dtype=dtype)
    mm = bf16_scores if dtype == torch.bfloat16 else matmul_t
    for _ in range(3):
        mm(x, w)
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        mm(x, w)
        best = min(best, time.perf_counter() - t)
    return 2 * 2048 * 768 * 3072 / best / 1e9


def hnsw_bench(corpus: np.ndarray, q: np.ndarray, k: int, n: int, threads: int) -> dict:
    import faiss

    from sentembed.search import semantic_search

    faiss.omp_set_num_threads(threads)
    x = np.ascontiguousarray(corpus[:n])
    t = time.perf_counter()
    exact = semantic_search(q, x, k, score="dot")  # unit vectors: dot == cosine
    t_exact = time.perf_counter() - t
    index = faiss.IndexHNSWFlat(x.shape[1], 32, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    t = time.perf_counter()
    index.add(x)
    build = time.perf_counter() - t
    out = {"rows": n, "build_s": round(build, 1), "exact_qps": round(len(q) / t_exact, 1), "sweep": []}
    for ef in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096):
        index.hnsw.efSearch = ef
        index.search(q[:5], k)
        t = time.perf_counter()
        _, ids = index.search(q, k)
        dt = time.perf_counter() - t
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact.indices)]))
        out["sweep"].append({"ef_search": ef, "recall@10": round(recall, 4), "qps": round(len(q) / dt, 1)})
        if recall >= 0.95:
            out.update(ef_search=ef, recall=recall, hnsw_qps=round(len(q) / dt, 1),
                       ratio_to_exact=round((len(q) / dt) / (len(q) / t_exact), 2))
            break
    return out


def ivfpq_bench(corpus: np.ndarray, q: np.ndarray, k: int, n: int, threads: int) -> dict:
    """IVF-PQ as the index builds and searches it (search/ann.py: about 4 * sqrt(n) lists,
    dimension / 8 sub-quantizers of 8 bits, refine * k candidates re-scored exactly): recall@10
    and queries/s by nprobe, against exact search on the same rows."""
    import faiss

    from sentembed.search import ann, semantic_search

    faiss.omp_set_num_threads(threads)
    x = np.ascontiguousarray(corpus[:n])
    exact = semantic_search(q, x, k, score="dot")
    t = time.perf_counter()
    params = ann.AnnParams()
    sample = x[np.random.default_rng(0).choice(n, min(n, 100_000), replace=False)]
    index = ann.build("ivfpq", x.shape[1], "cosine", params, train=sample)
    index.add(x)
    out = {"rows": n, "build_s": round(time.perf_counter() - t, 1), "sweep": []}
    for nprobe in (1, 2, 4, 8, 16, 32, 64, 128, 256):
        t = time.perf_counter()
        _, rows = ann.search(index, "ivfpq", q, params.refine * k, ann.AnnParams(nprobe=nprobe))
        scores = np.einsum("qcd,qd->qc", x[np.maximum(rows, 0)], q)  # the exact re-scoring
        ids = np.take_along_axis(rows, np.argsort(-np.where(rows >= 0, scores, -np.inf), axis=1)[:, :k], axis=1)
        dt = time.perf_counter() - t
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(ids, exact.indices)]))
        out["sweep"].append({"nprobe": nprobe, "recall@10": round(recall, 4), "qps": round(len(q) / dt, 1)})
        if recall >= 0.99 or nprobe >= getattr(index, "nlist", nprobe):
            break
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", "--rows", dest="n", type=int, default=1_000_000, help="corpus rows")
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--nq", type=int, default=100)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hnsw-n", type=int, default=100_000, help="rows for the HNSW part (0 skips it)")
    p.add_argument("--ivfpq-n", type=int, default=100_000, help="rows for the IVF-PQ part (0 skips it)")
    p.add_argument("--dir", default=None, help="where to write the temporary corpus file")
    p.add_argument("--output", default=None, help="write the results as JSON here (the chart goes beside it, .png; "
                   "without --output: benchmarks/results/search.png)")
    p.add_argument("--worker", choices=["ours", "reference", "index-int8", "index-bf16"], help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    import torch

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory(dir=args.dir)
    path = Path(tmp.name) / "corpus.f32"
    t = time.perf_counter()
    make_corpus(path, args.n, args.d)
    corpus_bytes = args.n * args.d * 4
    from sentembed.model.cpu import cpu
    from sentembed.search.int8_scan import int8_scan_pays
    from sentembed.search.prefilter import bf16_scan_pays

    print(f"CPU: {cpu().describe()}; faster than fp32 here: int8 {'yes' if int8_scan_pays() else 'no'}, "
          f"bf16 {'yes' if bf16_scan_pays() else 'no'} (where no, that index line scans fp32)")
    print(f"corpus: {args.n:,} x {args.d} unit vectors, {corpus_bytes / 2**30:.2f} GiB memory-mapped "
          f"({time.perf_counter() - t:.0f} s to write); {args.nq} queries, top-{args.k}, {args.threads} threads")
    corpus = np.memmap(path, dtype=np.float32, mode="r", shape=(args.n, args.d))
    t = time.perf_counter()
    build_index(path.with_suffix(".index"), corpus)
    print(f"index built in {time.perf_counter() - t:.0f} s")
    add_bf16_copies(path.with_suffix(".index"), args.d)
    q = queries(args.d, args.nq)
    # The index's first search after opening checks every file's checksum (a pass over all its
    # bytes) and measures which copy scans fastest here: timed apart, as a server pays it once.
    t = time.perf_counter()
    idx = open_index(path.with_suffix(".index"), args.d)
    run_index(q, idx, args.k)
    first_search = time.perf_counter() - t
    print(f"index: first search after opening {first_search:.2f} s (checksums of every file read)", flush=True)
    idx16 = open_index(path.with_suffix(".index"), args.d, "bf16")
    runs = {"index-int8": lambda: run_index(q, idx, args.k), "index-bf16": lambda: run_index(q, idx16, args.k),
            "semantic_search": lambda: run_ours(q, corpus, args.k),
            "sentence-transformers": lambda: run_reference(q, corpus, args.k)}
    run_ours(q, corpus[:1000], args.k)
    run_reference(q, corpus[:1000], args.k)
    times = {name: [] for name in runs}
    ids = {}
    for r in range(args.rounds):
        order = list(runs) if r % 2 == 0 else list(runs)[::-1]
        for name in order:
            t = time.perf_counter()
            ids[name] = runs[name]()
            times[name].append(time.perf_counter() - t)
    ours = ("index-int8", "index-bf16", "semantic_search")
    agree = {name: float(np.mean([set(a) == set(b) for a, b in zip(ids[name], ids["sentence-transformers"])]))
             for name in ours}
    med = {k: float(np.median(v)) for k, v in times.items()}
    ceiling = gemm_ceiling(args.threads)
    ceiling_bf16 = gemm_ceiling(args.threads, torch.bfloat16)
    flop = 2 * args.nq * args.d * args.n
    ref = med["sentence-transformers"]
    result = {
        "n": args.n, "d": args.d, "queries": args.nq, "top_k": args.k, "threads": args.threads,
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "speedup": {k: round(ref / med[k], 2) for k in ours},
        "index_first_search_s": round(first_search, 3),
        "same_top10": agree,
        "gemm_ceiling_gflops": round(ceiling, 1), "bf16_gemm_ceiling_gflops": round(ceiling_bf16, 1),
        "index_bf16_share_of_bf16_ceiling": round(flop / med["index-bf16"] / 1e9 / ceiling_bf16, 3),
        "share_of_fp32_ceiling": {k: round(flop / med[k] / 1e9 / ceiling, 3) for k in ours},
    }
    goals = {"index-int8": "goal >= 8x", "index-bf16": "beside int8", "semantic_search": "goal >= 4x"}
    for name in ours:
        print(f"exact, {name}: {med[name]:.3f} s vs sentence-transformers {ref:.3f} s -> {ref / med[name]:.2f}x "
              f"({goals[name]}); same top-10 for {agree[name]:.0%} of queries; "
              f"{flop / med[name] / 1e9:.0f} GFLOP/s-equivalent = {flop / med[name] / 1e9 / ceiling:.0%} of the fp32 ceiling")
    print(f"GEMM ceilings here (2048x768x3072): fp32 {ceiling:.0f} GFLOP/s, bf16 {ceiling_bf16:.0f}; the index's "
          f"bf16 scan reached {result['index_bf16_share_of_bf16_ceiling']:.0%} of the bf16 one")
    idx.close()
    idx16.close()
    mem = {}
    for w in ("index-int8", "index-bf16", "ours", "reference"):
        out = subprocess.run([sys.executable, __file__, "--worker", w, "--path", str(path), "--n", str(args.n),
                              "--d", str(args.d), "--nq", str(args.nq), "--k", str(args.k), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        mem[w] = round((m["peak_kb"] - m["base_kb"]) * 1024 / corpus_bytes, 3)
    result["peak_memory_over_corpus"] = mem
    print(f"peak RSS growth / fp32 corpus bytes: index through int8 {mem['index-int8']:.2f}x (goal <= 0.3x), "
          f"through bf16 {mem['index-bf16']:.2f}x, semantic_search {mem['ours']:.2f}x (goal <= 1.2x), "
          f"sentence-transformers {mem['reference']:.2f}x")
    del corpus
    if args.hnsw_n:
        corpus = np.memmap(path, dtype=np.float32, mode="r", shape=(args.n, args.d))
        h = hnsw_bench(corpus, q, args.k, min(args.hnsw_n, args.n), args.threads)
        result["hnsw"] = h
        if "hnsw_qps" in h:
            print(f"HNSW (M=32, efC=100) on {h['rows']:,} rows, built in {h['build_s']} s: efSearch={h['ef_search']} gives "
                  f"recall@10 {h['recall']:.3f} at {h['hnsw_qps']} q/s vs exact {h['exact_qps']} q/s -> {h['ratio_to_exact']}x")
        else:
            print(f"HNSW never reached recall@10 0.95: {h['sweep']}")
        del corpus
    if args.ivfpq_n:
        corpus = np.memmap(path, dtype=np.float32, mode="r", shape=(args.n, args.d))
        result["ivfpq"] = v = ivfpq_bench(corpus, q, args.k, min(args.ivfpq_n, args.n), args.threads)
        print(f"IVF-PQ on {v['rows']:,} rows, built in {v['build_s']} s: "
              + ", ".join(f"nprobe {s['nprobe']}: recall@10 {s['recall@10']:.3f} at {s['qps']} q/s" for s in v["sweep"]))
        del corpus
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2))
    if args.hnsw_n or args.ivfpq_n:
        chart = plots.search_chart(result, plots.chart_path(args.output or ROOT / "benchmarks" / "results" / "search.json"))
        print(f"chart: {chart}")
    tmp.cleanup()


if __name__ == "__main__":
    main()
