"""Reranking and mining speed: sentembed's cross-encoder against sentence-transformers'
CrossEncoder.predict on the same model, and mine_hard_negatives against
sentence_transformers.util.mine_hard_negatives on the same pairs and corpus.

Pairs: SciFact test queries, each with its top-20 documents by BM25 (an FTS5 index, no
model, so the candidate set costs nothing to build). Variants run alternately (round-robin;
the best round counts, since a shared machine only makes a run slower), same threads and
batch size: sentembed fp32, int8 (and bf16 where the CPU has it) and the reference's torch
fp32. Reports pairs/s, the ratio to the reference, the Spearman correlation of each
variant's scores with sentembed fp32's (goal int8 >= 0.99), max |delta| of sentembed fp32
to the reference (parity) and each variant's share of this CPU's GEMM peak in its precision
(encode.py's: the model's FLOP a token over one 2048x768x3072 GEMM's). Goals: fp32 >= 1.5x,
int8 >= 3x.

Mining: SciFact train pairs (query, a judged document) against the corpus, 3 negatives from
ranks 0-50, both libraries on all-mpnet-base-v2 (each embeds the corpus itself), alternating:
sentembed fp32, int8 (and bf16 where the CPU has it) against the reference's torch fp32 and
its fastest CPU backend (OpenVINO, default precision). Reports pairs/s, the ratios to both
(goal >= 3x) and how many mined triplets each shares with sentembed fp32's and the
reference's torch fp32's (the negatives near the window's edge move with the precision).

The model: --model DIR (a trained reranker), else all-mpnet-base-v2's transformer with a
fresh head (seed 0), written once to --cache: its speed is any MPNet cross-encoder's; for
the int8 fidelity figure a trained reranker is the honest input.

    .venv-bench/bin/python benchmarks/rerank.py                     # the full run
    .venv-bench/bin/python benchmarks/rerank.py --limit 4 --corpus-limit 200 --rounds 1   # a smoke test
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # measure this checkout, whatever the venv has installed
from encode import FLOP_PER_TOKEN, gemm_peaks  # noqa: E402  (benchmarks/encode.py, beside this script)


def scifact(data: Path, split: str):
    from sentembed.evaluation.readers import read_beir

    beir = read_beir(data / "scifact", split)   # documents as title + " " + text
    return beir.queries, beir.corpus, beir.qrels


def rerank_pairs(data: Path, limit: int | None, depth: int) -> list[tuple[str, str]]:
    """Each test query with its `depth` best documents by BM25."""
    from sentembed.search.retriever import IndexRetriever

    queries, corpus, _ = scifact(data, "test")
    queries = dict(list(queries.items())[:limit])
    run = IndexRetriever(mode="lexical", chunk_tokens=None, show_progress=False)(None, queries, corpus, k=depth)
    return [(queries[q], corpus[d]) for q in queries for d in run.get(q, {})]


def reranker_dir(args) -> Path:
    if args.model:
        return Path(args.model)
    path = args.cache / "rerank-all-mpnet-base-v2-fresh-head"
    if not (path / "config.json").is_file():
        from sentembed.cross_encoder import CrossEncoder

        CrossEncoder.from_encoder("all-mpnet-base-v2", num_labels=1, seed=0).save(path)
    return path


def timed(run) -> tuple[float, object]:
    start = time.perf_counter()
    out = run()
    return time.perf_counter() - start, out


def bench_rerank(args) -> dict:
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers import CrossEncoder as STCrossEncoder

    import sentembed
    from sentembed.model.cpu import cpu

    path = reranker_dir(args)
    pairs = rerank_pairs(args.data, args.limit, args.depth)
    variants = {
        "se-fp32": sentembed.load_cross_encoder(path, device="cpu", dtype="float32"),
        "se-int8": sentembed.load_cross_encoder(path, device="cpu", quantize="int8"),
        "st-torch-fp32": STCrossEncoder(str(path), device="cpu"),
    }
    if cpu().bf16:
        variants["se-bf16"] = sentembed.load_cross_encoder(path, device="cpu", dtype="bfloat16")
    progress = {name: "show_progress_bar" if name.startswith("st-") else "show_progress" for name in variants}
    calls = {name: (lambda some, m=m, off=progress[name]: m.predict(some, batch_size=args.batch_size, **{off: False}))
             for name, m in variants.items()}
    for run in calls.values():   # warm up: compile, caches, first allocations
        run(pairs[:16])
    best: dict[str, float] = {}
    scores: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, run in calls.items():
            seconds, out = timed(lambda: run(pairs))
            best[name] = min(best.get(name, float("inf")), seconds)
            scores[name] = np.asarray(out, dtype=np.float64)
    ref = best["st-torch-fp32"]
    # Every pair is one forward pass over its tokens: the share of this CPU's GEMM peak in the
    # variant's precision says how much any implementation could still gain.
    tokens = sum(map(len, variants["se-fp32"].tokenizer.pair_ids(pairs)))
    peaks = gemm_peaks()
    precision = lambda name: "int8" if "int8" in name else "bf16" if "bf16" in name else "fp32"  # noqa: E731
    rows = {name: {"pairs_per_s": len(pairs) / best[name], "x_reference": ref / best[name],
                   "spearman_to_se_fp32": float(spearmanr(scores[name], scores["se-fp32"]).statistic),
                   "share_of_gemm_peak": tokens * FLOP_PER_TOKEN / best[name] / (peaks[precision(name)] * 1e9)}
            for name in calls}
    return {"pairs": len(pairs), "tokens": tokens, "gemm_peaks_gflops": peaks, "queries": args.limit, "depth": args.depth,
            "threads": torch.get_num_threads(),
            "batch_size": args.batch_size, "model": str(path), "variants": rows,
            "max_abs_delta_se_fp32_vs_st": float(np.abs(scores["se-fp32"] - scores["st-torch-fp32"]).max())}


def st_mining_models(args, path: Path) -> dict:
    """The reference's torch fp32 model and its fastest CPU backend (OpenVINO, its default
    precision: bf16 where the CPU has it), on a copy of the model directory that keeps the export."""
    import shutil

    from sentence_transformers import SentenceTransformer

    st_dir = args.cache / "st"
    if not (st_dir / "modules.json").is_file():
        shutil.copytree(path, st_dir, dirs_exist_ok=True)
    models = {"st-torch-fp32": SentenceTransformer(str(st_dir), device="cpu")}
    if "st-ov" not in args.skip.split(","):
        models["st-ov-default"] = SentenceTransformer(str(st_dir), device="cpu", backend="openvino")
        if not (st_dir / "openvino" / "openvino_model.xml").is_file():
            models["st-ov-default"].save_pretrained(str(st_dir))   # later runs load the export
    return models


def bench_mining(args) -> dict:
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives as st_mine

    import sentembed
    from sentembed.model.cpu import cpu
    from sentembed.model.resolve import resolve_model
    from sentembed.training import mine_hard_negatives

    queries, corpus, qrels = scifact(args.data, "train")
    pairs = [(queries[q], corpus[d]) for q, docs in qrels.items() for d, rel in docs.items() if rel > 0 and q in queries]
    pairs = pairs[: args.mining_pairs]
    texts = list(dict.fromkeys([p for _, p in pairs] + list(corpus.values())))[: args.corpus_limit]
    controls = dict(num_negatives=3, range_min=0, range_max=50)
    path = resolve_model("all-mpnet-base-v2")
    ours = {"se-fp32": sentembed.load(path, device="cpu"), "se-int8": sentembed.load(path, device="cpu", quantize="int8")}
    if cpu().bf16:
        ours["se-bf16"] = sentembed.load(path, device="cpu", dtype="bfloat16")
    dataset = Dataset.from_dict({"query": [q for q, _ in pairs], "positive": [p for _, p in pairs]})
    calls = {name: (lambda m=m: list(mine_hard_negatives(pairs, corpus=texts, encoder=m, batch_size=args.batch_size,
                                                          show_progress=False, **controls)))
             for name, m in ours.items()}
    calls.update({name: (lambda m=m: [tuple(r.values()) for r in st_mine(
        dataset, m, corpus=texts, batch_size=args.batch_size, verbose=False, output_format="triplet", **controls)])
        for name, m in st_mining_models(args, path).items()})
    for model in ours.values():   # warm up: the int8 graph compiles on its first batch
        model.encode(texts[:8])
    best: dict[str, float] = {}
    rows: dict[str, set] = {}
    for _ in range(args.rounds):
        for name, run in calls.items():
            seconds, out = timed(run)
            best[name] = min(best.get(name, float("inf")), seconds)
            rows[name] = set(out)
    fastest_st = min((n for n in best if n.startswith("st-")), key=best.get)
    return {"pairs": len(pairs), "corpus": len(texts), **controls, "batch_size": args.batch_size,
            "variants": {name: {"pairs_per_s": len(pairs) / best[name],
                                "x_st_torch_fp32": best["st-torch-fp32"] / best[name],
                                f"x_{fastest_st}": best[fastest_st] / best[name],
                                "triplets": len(rows[name]),
                                "shared_with_se_fp32": len(rows[name] & rows["se-fp32"]),
                                "shared_with_st_torch_fp32": len(rows[name] & rows["st-torch-fp32"])}
                         for name in calls}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SENTEMBED_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--model", help="a cross-encoder directory (default: a fresh head on all-mpnet-base-v2)")
    parser.add_argument("--limit", type=int, default=None, help="SciFact test queries to rerank (default all 300)")
    parser.add_argument("--depth", type=int, default=20, help="documents per query")
    parser.add_argument("--mining-pairs", type=int, default=None, help="SciFact train pairs to mine for (default all)")
    parser.add_argument("--corpus-limit", type=int, default=None, help="corpus texts to mine from (default all)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--skip", default="", help="rerank, mining and/or st-ov (the reference's OpenVINO "
                                                   "mining run), comma-separated")
    parser.add_argument("--cache", type=Path, default=Path(os.environ.get("SENTEMBED_BENCH_CACHE",
                                                                          Path(tempfile.gettempdir()) / "sentembed-bench")))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    args.cache.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, args.skip.split(",")))
    from sentembed.model.cpu import cpu

    results = {"cpu": cpu().describe(), "threads": args.threads}
    print(f"CPU: {results['cpu']}; {args.threads} threads", flush=True)
    for part, bench in (("rerank", bench_rerank), ("mining", bench_mining)):
        if part in skip:
            continue
        results[part] = bench(args)
        print(json.dumps({part: results[part]}, indent=2), flush=True)  # each part as soon as it is done
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
