"""Memory of hard-negative mining at scale: 1M synthetic (query, positive) pairs streamed
through `sentembed.training.mine_hard_negatives` against a synthetic corpus, the rows written
to a file as they come. Reports the peak resident memory above the process's baseline (after
imports and the encoder's table) next to what the pairs and corpus texts would take in memory.

The encoder is a hashed bag of words (a fixed random vector per word, summed, normalised):
what is measured is the mining's own memory (streamed pairs, spilled corpus vectors, one chunk
of queries at a time), not a model's, and the run takes minutes instead of days.

    python benchmarks/mining_memory.py                       # 1M pairs, 100,000 corpus texts
    python benchmarks/mining_memory.py --pairs 20000 --corpus 5000   # a smoke test
"""
from __future__ import annotations

import argparse
import itertools
import json
import resource
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # measure this checkout

VOCABULARY = 50_000


class BagOfWords:
    """A deterministic stand-in encoder: each word a fixed random unit vector, a text their sum."""

    similarity_fn_name = "cosine"

    def __init__(self, dimension: int) -> None:
        self.table = np.random.default_rng(0).standard_normal((1 << 16, dimension)).astype(np.float32)

    def encode(self, texts, **_) -> np.ndarray:
        rows = [[zlib.crc32(w.encode()) & 0xFFFF for w in t.split()] for t in texts]
        out = np.stack([self.table[r].sum(0) for r in rows])
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def words(rng: np.random.Generator, n: int) -> str:
    return " ".join(f"w{w}" for w in rng.integers(0, VOCABULARY, n))


def pairs(n: int, topics: int):
    """Pair i: a query and its positive sharing topic words, so topics make hard negatives."""
    rng = np.random.default_rng(1)
    for i in range(n):
        topic = f"t{i % topics} u{(i * 7) % topics}"
        yield f"q{i} {topic} {words(rng, 4)}", f"d{i} {topic} {words(rng, 12)}"


def corpus(n: int, topics: int):
    rng = np.random.default_rng(2)
    for i in range(n):
        yield f"c{i} t{i % topics} {words(rng, 12)}"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024   # Linux: kilobytes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pairs", type=int, default=1_000_000)
    p.add_argument("--corpus", type=int, default=100_000)
    p.add_argument("--dimension", type=int, default=64)
    p.add_argument("--num-negatives", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    import torch

    from sentembed.model.cpu import cpu
    from sentembed.training import mine_hard_negatives

    torch.set_num_threads(args.threads)
    encoder = BagOfWords(args.dimension)
    topics = max(args.pairs // 20, 1)
    sample = 10_000  # texts measured for the estimate of the whole
    pair_chars = sum(len(q) + len(d) for q, d in itertools.islice(pairs(args.pairs, topics), sample))
    corpus_chars = sum(map(len, itertools.islice(corpus(args.corpus, topics), sample)))
    text_mb = (pair_chars / min(args.pairs, sample) * args.pairs
               + corpus_chars / min(args.corpus, sample) * args.corpus) / 2**20
    baseline = peak_rss_mb()
    start, written = time.perf_counter(), 0
    with tempfile.TemporaryDirectory() as tmp, open(Path(tmp) / "rows.jsonl", "w") as out:
        rows = mine_hard_negatives(pairs(args.pairs, topics), corpus=corpus(args.corpus, topics), encoder=encoder,
                                   num_negatives=args.num_negatives, range_max=30, relative_margin=0.05,
                                   output="n-tuple", spill_dir=tmp, show_progress=True)
        for row in rows:
            out.write(json.dumps(row) + "\n")
            written += 1
        size_mb = out.tell() / 2**20
    seconds = time.perf_counter() - start
    result = {"cpu": cpu().describe(), "pairs": args.pairs, "corpus": args.corpus, "dimension": args.dimension,
              "rows_written": written, "output_mb": round(size_mb, 1), "seconds": round(seconds, 1),
              "baseline_rss_mb": round(baseline, 1), "peak_rss_growth_mb": round(peak_rss_mb() - baseline, 1),
              "texts_in_memory_would_be_mb": round(text_mb, 1)}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
