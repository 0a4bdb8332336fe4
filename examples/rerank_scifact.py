"""Retrieve, fine-tune, rerank on SciFact: the whole table of the search pipeline.

    nice .venv/bin/python examples/rerank_scifact.py                   # every stage (about three hours on 2 cores)
    nice .venv/bin/python examples/rerank_scifact.py --rerank-top-k 40 --only base:hybrid   # one row, deeper

Stages, each kept under --out and skipped when its output is there (delete it to redo it):

1. `index-base/`: an `Index` of the SciFact corpus with all-mpnet-base-v2 (passages, lexical table).
2. `mined.jsonl`: hard negatives for the train split's (query, cited abstract) pairs, mined
   from that index (dense candidates ranked 0-30, none judged relevant, none scoring above
   0.95 x the positive: `relative_margin=0.05` skips likely false negatives).
3. `bi-encoder/`: all-mpnet-base-v2 fine-tuned with CachedMNRL on (query, positive, hardest negative),
   3 epochs (69 steps of 32, lr 2e-5, about 70 minutes on 2 cores; one epoch reached 0.69419 dense).
4. `index-tuned/`: the same corpus indexed with it.
5. `reranker/`: a cross-encoder from all-mpnet-base-v2's transformer with a fresh head, trained
   with ListNet on (query, positive, --rerank-negatives of the mined negatives): 2 epochs at lr
   1e-4 (at the bi-encoder's 2e-5 the fresh head's loss stayed at log 4 for 20 steps), windows
   of 128 tokens (the window all-mpnet-base-v2 was trained at; 26 minutes on 2 cores).
6. The table: SciFact test nDCG@10 and Recall@100 for dense, lexical and hybrid with the base
   and the fine-tuned model, each then reranked (`Index.search_many(..., rerank=reranker,
   rerank_top_k=K)`: the reranker scores the passage each document matched with), by the
   reranker's score alone and by its blend with the first stage's (`rerank_alpha`: each
   min-max normalised over the list; 0.5 was the best of 0.0-1.0 by 0.1 on 300 train queries'
   hybrid top 20, `--alpha-sweep` reprints that).

Only the train split trains and mines; the test split scores.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SENTEMBED_DATA", ROOT.parent / "shared" / "data"))


class ScoredOnce:
    """A reranker that scores each (query, passage) pair once across the table's rows: the
    same pair gets the same score whichever first stage retrieved it."""

    def __init__(self, reranker) -> None:
        self.reranker, self.scores = reranker, {}
        self.num_labels = reranker.num_labels

    def predict(self, pairs, **kwargs):
        import numpy as np

        todo = list(dict.fromkeys(tuple(p) for p in pairs if tuple(p) not in self.scores))
        if todo:
            self.scores.update(zip(todo, np.asarray(self.reranker.predict(todo, **kwargs)).tolist()))
        return np.array([self.scores[tuple(p)] for p in pairs], dtype=np.float32)


def build_index(path: Path, enc, corpus: dict):
    from tqdm import tqdm

    from sentembed.search import Index

    if path.exists():
        return Index.open(path, enc)
    tmp = path.with_name(path.name + ".partial")
    idx = Index.create(tmp, enc, chunk_tokens="auto")
    ids = list(corpus)
    for s in tqdm(range(0, len(ids), 500), desc=f"index {path.name}", unit="500 docs"):
        idx.add([corpus[i] for i in ids[s:s + 500]], ids=ids[s:s + 500])
    idx.close()
    tmp.rename(path)
    return Index.open(path, enc)


def train(model, rows, loss: str, out: Path, a, name: str) -> None:
    from sentembed.training import TrainConfig, Trainer, TrainDataset, make_loss

    # CachedMNRL: the loss of MNRL with memory bounded by its mini-batches (plain MNRL on 32
    # (query, positive, negative) rows of 256 tokens needs more than 24 GB).
    params = {"scale": 20.0, "similarity": "cosine", "mini_batch_size": 8} if loss == "cached_mnrl" else {}
    ce = loss == "listnet"
    cfg = TrainConfig(model=a.model, output_dir=str(out), loss=loss, loss_params=params,
                      batch_size=a.rerank_batch_size if ce else a.batch_size, lr=a.rerank_lr if ce else a.lr,
                      epochs=a.rerank_epochs if ce else a.epochs, max_steps=a.rerank_max_steps if ce else None,
                      warmup_ratio=0.1, precision="bf16",
                      max_seq_length=a.rerank_max_seq_length if ce else a.train_max_seq_length,
                      log_steps=5, seed=42, model_name=name,
                      save_steps=None if ce else max(1, len(rows) // a.batch_size))  # a checkpoint an epoch
    t = time.time()
    Trainer(model, [TrainDataset.from_rows("scifact-train", rows)], make_loss(loss, params), cfg).train()
    print(f"{name}: trained in {time.time() - t:.0f} s", flush=True)


def table(indexes: dict, reranker, test, k: int, alpha: float) -> list[dict]:
    """Per first stage: its run, reranked by the reranker alone, and by the blend (`alpha`)."""
    from sentembed.evaluation.metrics import retrieval_metrics

    qids = list(test.qrels)
    texts = [test.queries[q] for q in qids]
    rows = []
    for (model, mode), idx in indexes.items():
        for how in ("none", "reranker", "blend") if reranker is not None else ("none",):
            t = time.time()
            kw = {} if how == "none" else {"rerank": reranker, "rerank_top_k": k,
                                          "rerank_alpha": alpha if how == "blend" else None}
            hits = idx.search_many(texts, top_k=k if how != "none" else 100, mode=mode, **kw)
            run = {q: {h.id: h.score for h in found} for q, found in zip(qids, hits)}
            m = retrieval_metrics(run, test.qrels, (10, k, 100))
            row = {"model": model, "mode": mode, "reranked": {"none": False, "reranker": True, "blend": alpha}[how],
                   "ndcg@10": round(m["ndcg@10"], 5), f"recall@{k}": round(m[f"recall@{k}"], 5),
                   "recall@100": None if how != "none" else round(m["recall@100"], 5)}
            rows.append(row)
            print(json.dumps(row), f"({time.time() - t:.0f} s)", flush=True)
    return rows


def alpha_sweep(index, reranker, train, k: int, queries: int = 300) -> None:
    """nDCG@10 of `queries` train queries' hybrid top k reranked with each rerank_alpha, 0.0-1.0."""
    import random

    from sentembed.evaluation.metrics import retrieval_metrics

    qids = sorted(random.Random(0).sample(list(train.qrels), queries))
    qrels = {q: train.qrels[q] for q in qids}
    for alpha in [i / 10 for i in range(11)]:
        hits = index.search_many([train.queries[q] for q in qids], top_k=k, mode="hybrid", rerank=reranker,
                                 rerank_top_k=k, rerank_alpha=alpha)
        m = retrieval_metrics({q: {h.id: h.score for h in found} for q, found in zip(qids, hits)}, qrels, (10,))
        print(f"train, {queries} queries, hybrid top {k}, rerank_alpha {alpha:.1f}: nDCG@10 {m['ndcg@10']:.5f}", flush=True)


def write_table(a, rows: list[dict]) -> None:
    """runs/.../table.json (table-ROWS-kK.json for --only), with the arguments that made it."""
    name = f"table-{a.only.replace(':', '-').replace(',', '_')}-k{a.rerank_top_k}.json" if a.only else "table.json"
    (a.out / name).write_text(json.dumps({"args": {k: str(v) for k, v in vars(a).items()}, "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-mpnet-base-v2")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "scifact-pipeline")
    ap.add_argument("--dtype", default="bfloat16", help="for indexing and reranking (training autocasts bf16)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rerank-batch-size", type=int, default=8, help="(query, positive, 3 negatives) rows a step")
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--epochs", type=int, default=3, help="the bi-encoder's epochs (a checkpoint after each)")
    ap.add_argument("--train-max-seq-length", type=int, default=256)
    ap.add_argument("--rerank-max-seq-length", type=int, default=128, help="the reranker's window, training and scoring")
    ap.add_argument("--rerank-top-k", type=int, default=20)
    ap.add_argument("--rerank-negatives", type=int, default=3, help="mined negatives a query in the reranker's lists")
    ap.add_argument("--rerank-lr", type=float, default=1e-4, help="higher than the bi-encoder's: the head starts fresh")
    ap.add_argument("--rerank-epochs", type=int, default=2)
    ap.add_argument("--rerank-max-steps", type=int, default=None, help="stop the reranker's training early")
    ap.add_argument("--rerank-alpha", type=float, default=0.5, help="the blend's weight on the reranker's scores")
    ap.add_argument("--alpha-sweep", action="store_true", help="print the blend's train nDCG@10 for alpha 0.0-1.0, "
                    "then stop")
    ap.add_argument("--no-reranker", action="store_true", help="stages 1-4 and the table without reranking")
    ap.add_argument("--only", default=None, help="table rows to compute, e.g. base:hybrid,fine-tuned:dense (default all)")
    a = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    import sentembed
    from sentembed.evaluation import read_beir
    from sentembed.training import mine_hard_negatives
    from sentembed.training.hard_negatives import write_rows
    from sentembed.training.run import load_reranker

    a.out.mkdir(parents=True, exist_ok=True)
    train_split, test = read_beir(DATA / "scifact", "train"), read_beir(DATA / "scifact", "test")
    corpus = dict(test.corpus)  # one corpus for both splits
    pairs = [(train_split.queries[q], train_split.corpus[d]) for q, docs in train_split.qrels.items()
             for d, grade in docs.items() if grade > 0 and d in train_split.corpus]
    base = sentembed.load(a.model, device="cpu", dtype=a.dtype)
    base_index = build_index(a.out / "index-base", base, corpus)
    indexes = {("base", m): base_index for m in ("dense", "lexical", "hybrid")}

    mined = a.out / "mined.jsonl"
    if not mined.exists():
        rows = mine_hard_negatives(pairs, index=indexes["base", "dense"], encoder=base, num_negatives=3,
                                   range_max=30, relative_margin=0.05, mode="dense", output="n-tuple")
        write_rows(rows, mined, "n-tuple", 3)
    tuples = [tuple(r.values()) for r in map(json.loads, mined.read_text().splitlines())]
    print(f"{len(pairs)} train pairs, {len(tuples)} with 3 mined negatives", flush=True)

    if not (a.out / "bi-encoder").exists():
        train(sentembed.load(a.model, device="cpu"), [t[:3] for t in tuples], "cached_mnrl", a.out / "bi-encoder", a,
              "all-mpnet-base-v2 fine-tuned on SciFact (MNRL, mined hard negatives)")
    tuned = sentembed.load(a.out / "bi-encoder", device="cpu", dtype=a.dtype)
    tuned.max_seq_length = base.max_seq_length  # indexed like the base, at its window
    tuned_index = build_index(a.out / "index-tuned", tuned, corpus)
    indexes.update({("fine-tuned", m): tuned_index for m in ("dense", "hybrid")})  # lexical: the same passages

    if a.only:
        indexes = {key: idx for key, idx in indexes.items() if ":".join(key) in a.only.split(",")}
    if a.no_reranker:
        write_table(a, table(indexes, None, test, a.rerank_top_k, a.rerank_alpha))
        return
    if not (a.out / "reranker").exists():
        ce = load_reranker(a.model)
        ce.max_seq_length = a.rerank_max_seq_length
        train(ce, [t[:2 + a.rerank_negatives] for t in tuples], "listnet", a.out / "reranker", a,
              "all-mpnet-base-v2 reranker on SciFact (ListNet)")
    reranker = sentembed.load_cross_encoder(a.out / "reranker", device="cpu", dtype=a.dtype)
    reranker.max_seq_length = a.rerank_max_seq_length

    if a.alpha_sweep:
        alpha_sweep(base_index, ScoredOnce(reranker), train_split, a.rerank_top_k)
        return
    write_table(a, table(indexes, ScoredOnce(reranker), test, a.rerank_top_k, a.rerank_alpha))


if __name__ == "__main__":
    main()
