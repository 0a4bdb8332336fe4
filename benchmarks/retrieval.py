"""SciFact through the index in each search mode: quality, query latency and indexing speed.

    python benchmarks/retrieval.py                          # the full test set, real model (slow on CPU)
    python benchmarks/retrieval.py --limit 20               # a quick check of the script
    python benchmarks/retrieval.py --modes lexical          # lexical only: no model is run
    python benchmarks/retrieval.py --index runs/scifact-index --split train --alpha 0.3,0.4,0.5,0.6
                                  # keep the index (later runs reuse it), pick alpha on the train queries

One index over the SciFact corpus (documents chunked to the model's window, lexical table
built in the same commits) answers the test queries in each mode; reported:

- nDCG@10 and Recall@100 per mode (trec_eval definitions, sentembed.evaluation.metrics);
- query latency p50 / p99, one query at a time (the query's embedding included), top-10, the
  modes taking turns query by query; as a ratio to dense (goal: hybrid <= 1.5x);
- indexing throughput on documents shorter than one window, with chunking and the lexical
  table against the index as it was before them (no passages, no lexical table); rounds
  alternate, best of each (goal: >= 0.9x).

With --limit N: the first N judged queries, over their judged documents and the first 10 N
others (figures then mean nothing beyond "the script works").
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MODES = ("dense", "lexical", "hybrid")


def load_scifact(folder: Path, limit: int | None, split: str = "test") -> tuple[dict, dict, dict]:
    from sentembed.evaluation.readers import read_beir

    data = read_beir(folder, split)
    qrels = dict(data.qrels)
    corpus = dict(data.corpus)
    if limit:
        qrels = dict(list(qrels.items())[:limit])
        judged = {d for docs in qrels.values() for d in docs}
        others = [d for d in corpus if d not in judged][: 10 * limit]
        corpus = {d: corpus[d] for d in corpus if d in judged or d in set(others)}
    queries = {q: data.queries[q] for q in qrels}
    return queries, corpus, qrels


def build(path: Path, enc, corpus: dict, chunk_tokens, old_format: bool = False, batch: int = 1000):
    """An index of `corpus`; `old_format`: as indexes were before passages and the lexical table."""
    from sentembed.search import Index

    idx = Index.create(path, enc, chunk_tokens=None if old_format else chunk_tokens)
    if old_format:
        idx.close()
        db = sqlite3.connect(str(path / "catalog.sqlite"))
        db.executescript("DROP TABLE lexical; DROP TABLE passages;")
        db.close()
        idx = Index.open(path, enc)
    ids = list(corpus)
    start = time.perf_counter()
    for s in range(0, len(ids), batch):
        part = ids[s : s + batch]
        idx.add([corpus[i] for i in part], ids=part)
    return idx, time.perf_counter() - start


def quality(idx, queries: dict, qrels: dict, modes: list[str], alphas: list) -> dict:
    """nDCG@10 and Recall@100 per mode; hybrid once per alpha (None: reciprocal-rank fusion)."""
    from sentembed.evaluation.metrics import retrieval_metrics

    out = {}
    qids = list(queries)
    runs = [(m, a) for m in modes for a in (alphas if m == "hybrid" else [None])]
    for mode, alpha in runs:
        hits = idx.search_many([queries[q] for q in qids], top_k=100, mode=mode, alpha=alpha)
        run = {q: {h.id: h.score for h in found} for q, found in zip(qids, hits)}
        m = retrieval_metrics(run, qrels, (10, 100))
        name = mode if alpha is None else f"{mode} alpha={alpha}"
        out[name] = {"ndcg@10": m["ndcg@10"], "recall@100": m["recall@100"]}
        print(f"  {name:18s} nDCG@10 {m['ndcg@10']:.5f}  Recall@100 {m['recall@100']:.5f}", flush=True)
    return out


def latency(idx, queries: dict, modes: list[str], alpha) -> dict:
    times: dict[str, list[float]] = {m: [] for m in modes}
    for n, text in enumerate(queries.values()):
        order = modes[n % len(modes):] + modes[: n % len(modes)]  # each mode goes first in turn
        for mode in order:
            start = time.perf_counter()
            idx.search(text, top_k=10, mode=mode, alpha=alpha if mode == "hybrid" else None)
            times[mode].append(time.perf_counter() - start)
    out = {m: {"p50_ms": 1e3 * float(np.percentile(t, 50)), "p99_ms": 1e3 * float(np.percentile(t, 99))}
           for m, t in times.items()}
    if "dense" in out:
        for m in out:
            out[m]["p50_x_dense"] = out[m]["p50_ms"] / out["dense"]["p50_ms"]
            out[m]["p99_x_dense"] = out[m]["p99_ms"] / out["dense"]["p99_ms"]
    for m, r in out.items():
        ratios = f"  ({r['p50_x_dense']:.2f}x / {r['p99_x_dense']:.2f}x dense)" if "p50_x_dense" in r else ""
        print(f"  {m:8s} p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms{ratios}", flush=True)
    return out


def throughput(enc, corpus: dict, chunk_tokens, docs: int, rounds: int, tmp: Path) -> dict:
    """docs/s adding documents shorter than one window: chunked + lexical vs the old format."""
    from sentembed.search.chunking import Chunker

    window = Chunker.for_encoder(enc, None if chunk_tokens == "auto" else chunk_tokens).tokens
    short = [d for d, n in zip(corpus, enc.count_tokens(list(corpus.values()))) if n - 2 <= window][:docs]
    subset = {d: corpus[d] for d in short}
    best = {"before": 0.0, "chunked+lexical": 0.0}
    for r in range(rounds):
        for name in (("before", "chunked+lexical") if r % 2 == 0 else ("chunked+lexical", "before")):
            idx, secs = build(tmp / f"tp-{name}-{r}", enc, subset, chunk_tokens, old_format=name == "before")
            idx.close()
            best[name] = max(best[name], len(subset) / secs)
    ratio = best["chunked+lexical"] / best["before"]
    print(f"  {len(subset)} documents shorter than {window} tokens: before {best['before']:.1f} docs/s, "
          f"chunked+lexical {best['chunked+lexical']:.1f} docs/s: {ratio:.3f}x", flush=True)
    return {"documents": len(subset), "docs_per_s": best, "ratio": ratio}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "scifact")
    p.add_argument("--model", default="all-mpnet-base-v2")
    p.add_argument("--dtype", default="float32", help="float32, bfloat16 or auto")
    p.add_argument("--modes", default=",".join(MODES), help="comma separated: dense, lexical, hybrid")
    p.add_argument("--alpha", default=None,
                   help="hybrid: weighted fusion instead of RRF; several, comma separated ('rrf' for RRF), each measured")
    p.add_argument("--split", default="test", help="the queries and judgements: test, or train (to choose alpha)")
    p.add_argument("--index", type=Path, default=None,
                   help="keep the index here; an index already there (same model and chunking) is searched as it is")
    p.add_argument("--chunk-tokens", default="auto", help="'auto', 'none' or a number of tokens")
    p.add_argument("--limit", type=int, default=None, help="first N judged queries and a small corpus (a quick check)")
    p.add_argument("--throughput-docs", type=int, default=300, help="documents for the indexing throughput (0: skip)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of the throughput measurement")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", type=Path, default=None, help="write the figures as JSON")
    args = p.parse_args()

    import torch

    import sentembed
    from sentembed.search.retriever import _NoModel

    torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    chunk_tokens = None if args.chunk_tokens == "none" else args.chunk_tokens if args.chunk_tokens == "auto" \
        else int(args.chunk_tokens)
    queries, corpus, qrels = load_scifact(args.data, args.limit, args.split)
    alphas = [None if a.strip() == "rrf" else float(a) for a in (args.alpha or "rrf").split(",")]
    enc = sentembed.load(args.model, dtype=args.dtype)
    # Lexical alone runs no model: a constant stand-in that lends the model's tokenizer for chunking.
    index_enc = _NoModel(like=enc) if modes == ["lexical"] else enc
    report: dict = {"model": args.model, "dtype": enc.dtype, "queries": len(queries), "documents": len(corpus), "modes": modes,
                    "alpha": alphas, "split": args.split, "chunk_tokens": args.chunk_tokens}
    with tempfile.TemporaryDirectory(prefix="sentembed-bench-") as tmp:
        tmp = Path(tmp)
        from sentembed.model.cpu import cpu

        print(f"CPU: {cpu().describe()}; {args.threads} threads", flush=True)
        print(f"SciFact {args.split}: {len(queries)} queries, {len(corpus)} documents; model {args.model}", flush=True)
        if args.index is not None and args.index.exists():
            from sentembed.search import Index

            idx, secs = Index.open(args.index, index_enc), float("nan")  # its build time is not this run's
        else:
            idx, secs = build(args.index or tmp / "index", index_enc, corpus, chunk_tokens)
        info = idx.info()
        report["index"] = {"seconds": secs, "rows": info["rows"], "documents": info["count"]}
        print(f"indexed in {secs:.0f} s: {info['count']} documents, {info['rows']} passages", flush=True)
        print("quality", flush=True)
        report["quality"] = quality(idx, queries, qrels, modes, alphas)
        print("latency (one query at a time, top-10)", flush=True)
        report["latency"] = latency(idx, queries, modes, alphas[0])
        idx.close()
        if args.throughput_docs and modes != ["lexical"]:
            print("indexing throughput", flush=True)
            report["throughput"] = throughput(enc, corpus, chunk_tokens, args.throughput_docs, args.rounds, tmp)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
