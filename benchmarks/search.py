"""Exact and HNSW search: sentembed against sentence-transformers' util.semantic_search.

    python benchmarks/search.py                      # 1M x 768, 100 queries, top-10, 2 threads
    python benchmarks/search.py --n 200000 --rounds 2 --hnsw-n 50000   # a quicker look

What it reports:
- exact search seconds, sentembed vs util.semantic_search (cosine, the reference's score), same
  threads, runs alternating, median of --rounds; the ratio (goal >= 4x);
- results agree (same top-10 ids);
- peak memory of each, measured in a fresh process over the same memory-mapped corpus:
  peak RSS growth during the search / corpus bytes (goal <= 1.2x). File pages of the memory map
  count too, so reading the whole corpus shows as about 1.0x;
- the share of the fp32 GEMM ceiling, measured here on a 2048x768x3072 GEMM;
- HNSW (FAISS, M=32) on the first --hnsw-n rows: queries/s at the smallest efSearch reaching
  recall@10 >= 0.95 against exact, as a ratio to exact search's queries/s on the same rows.
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
    fn = run_ours if args.worker == "ours" else run_reference
    fn(q, corpus[:1000], args.k)  # imports and kernels warmed on a sliver
    base = status_kb("VmRSS")
    # Reset the peak-RSS mark (Linux: "5" > clear_refs), so VmHWM is the peak of the search alone.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    fn(q, corpus, args.k)
    print(json.dumps({"base_kb": base, "peak_kb": status_kb("VmHWM")}))


def gemm_ceiling(threads: int) -> float:
    import torch

    from sentembed.search.similarity import matmul_t

    torch.set_num_threads(threads)
    x, w = torch.randn(2048, 768), torch.randn(3072, 768)
    for _ in range(3):
        matmul_t(x, w)
    best = float("inf")
    for _ in range(10):
        t = time.perf_counter()
        matmul_t(x, w)
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--d", type=int, default=768)
    p.add_argument("--nq", type=int, default=100)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--hnsw-n", type=int, default=100_000, help="rows for the HNSW part (0 skips it)")
    p.add_argument("--dir", default=None, help="where to write the temporary corpus file")
    p.add_argument("--output", default=None, help="write the results as JSON here")
    p.add_argument("--worker", choices=["ours", "reference"], help=argparse.SUPPRESS)
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
    print(f"corpus: {args.n:,} x {args.d} unit vectors, {corpus_bytes / 2**30:.2f} GiB memory-mapped "
          f"({time.perf_counter() - t:.0f} s to write); {args.nq} queries, top-{args.k}, {args.threads} threads")
    corpus = np.memmap(path, dtype=np.float32, mode="r", shape=(args.n, args.d))
    q = queries(args.d, args.nq)
    run_ours(q, corpus[:1000], args.k)
    run_reference(q, corpus[:1000], args.k)
    times = {"sentembed": [], "sentence-transformers": []}
    agree = None
    for r in range(args.rounds):
        order = [("sentembed", run_ours), ("sentence-transformers", run_reference)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            t = time.perf_counter()
            ids = fn(q, corpus, args.k)
            times[name].append(time.perf_counter() - t)
            if name == "sentembed":
                ours_ids = ids
            else:
                ref_ids = ids
        agree = float(np.mean([set(a) == set(b) for a, b in zip(ours_ids, ref_ids)]))
    med = {k: float(np.median(v)) for k, v in times.items()}
    ceiling = gemm_ceiling(args.threads)
    achieved = 2 * args.nq * args.d * args.n / med["sentembed"] / 1e9
    result = {
        "n": args.n, "d": args.d, "queries": args.nq, "top_k": args.k, "threads": args.threads,
        "seconds": {k: [round(x, 3) for x in v] for k, v in times.items()},
        "median_s": {k: round(v, 3) for k, v in med.items()},
        "speedup": round(med["sentence-transformers"] / med["sentembed"], 2),
        "same_top10": agree,
        "gemm_ceiling_gflops": round(ceiling, 1), "achieved_gflops": round(achieved, 1),
        "share_of_ceiling": round(achieved / ceiling, 3),
    }
    print(f"exact: sentembed {med['sentembed']:.3f} s, sentence-transformers {med['sentence-transformers']:.3f} s "
          f"-> {result['speedup']:.2f}x (goal >= 4x); same top-10 for {agree:.0%} of queries")
    print(f"GEMM ceiling {ceiling:.0f} GFLOP/s (2048x768x3072 fp32); exact search reached {achieved:.0f} GFLOP/s "
          f"= {achieved / ceiling:.0%} of it")
    mem = {}
    for w in ("ours", "reference"):
        out = subprocess.run([sys.executable, __file__, "--worker", w, "--path", str(path), "--n", str(args.n),
                              "--d", str(args.d), "--nq", str(args.nq), "--k", str(args.k), "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        m = json.loads(out.stdout.strip().splitlines()[-1])
        mem[w] = round((m["peak_kb"] - m["base_kb"]) * 1024 / corpus_bytes, 3)
    result["peak_memory_over_corpus"] = mem
    print(f"peak RSS growth / corpus bytes: sentembed {mem['ours']:.2f}x (goal <= 1.2x), "
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
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2))
    tmp.cleanup()


if __name__ == "__main__":
    main()
