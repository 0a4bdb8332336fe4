"""SciFact through the persistent index: exact index == semantic_search, HNSW recall@10 vs exact.

    sentembed eval retrieval ../shared/data/scifact --split test \\
        --save-embeddings benchmarks/results/scifact-emb.npz      # real all-mpnet-base-v2 vectors (slow on CPU)
    python benchmarks/eval_index_scifact.py benchmarks/results/scifact-emb.npz

Adds the 5,183 document vectors (in two commits) to an exact and an HNSW index (default
parameters), closes and reopens them, and searches the test queries: reports whether the exact
index returns exactly `semantic_search`'s top-10 and the HNSW recall@10 against it
(acceptance: >= 0.98).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class VectorsOnly:
    """Stands for the model when only saved vectors are at hand (the fingerprint is a fixed probe)."""

    similarity_fn_name, normalizes, name = "cosine", True, "all-mpnet-base-v2 (saved vectors)"

    def __init__(self, dim: int) -> None:
        self.dimension = dim

    def encode(self, texts, **kw):
        return np.ones((len(texts), self.dimension), np.float32)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("embeddings", help=".npz written by `sentembed eval retrieval --save-embeddings`")
    p.add_argument("--k", type=int, default=10)
    args = p.parse_args()

    from sentembed.search import Index, semantic_search

    data = np.load(args.embeddings)
    q, c, dids = data["queries"], data["corpus"], [str(x) for x in data["corpus_ids"]]
    enc = VectorsOnly(c.shape[1])
    ref = semantic_search(q, c, args.k)
    ref_ids = [[dids[j] for j in row] for row in ref.indices]
    out = {"documents": len(c), "queries": len(q)}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("exact", "hnsw"):
            path = Path(tmp) / kind
            idx = Index.create(path, enc, kind=kind)
            t = time.perf_counter()
            half = len(c) // 2
            idx.add(dids[:half], ids=dids[:half], vectors=c[:half])
            idx.add(dids[half:], ids=dids[half:], vectors=c[half:])
            out[f"{kind}_add_s"] = round(time.perf_counter() - t, 1)
            idx.close()
            idx = Index.open(path, enc)
            t = time.perf_counter()
            hits = idx.search_many(q, args.k)
            out[f"{kind}_qps"] = round(len(q) / (time.perf_counter() - t), 1)
            got = [[h.id for h in row] for row in hits]
            if kind == "exact":
                out["exact_equals_semantic_search"] = got == ref_ids
            else:
                out["hnsw_recall@10"] = round(float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(got, ref_ids)])), 4)
            idx.close()
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
