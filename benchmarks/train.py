"""Training throughput: sentembed's Trainer against sentence-transformers'
SentenceTransformerTrainer, same model, loss (MultipleNegativesRankingLoss, scale 20, cosine),
data (Quora duplicate pairs, label 1), batch size and precision, alternating in one run.

    .venv/bin/python benchmarks/train.py --steps 10 --warmup 2
    .venv/bin/python benchmarks/train.py --cached-rss      # cached MNRL, batch 256: peak RSS

Needs `datasets` and `accelerate` for the reference trainer. Prints a markdown table and
writes benchmarks/results/train.json.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # measure this checkout, whatever the venv has installed
DATA = Path(os.environ.get("SENTEMBED_DATA", ROOT.parent / "shared" / "data"))


def quora_pairs(n: int) -> list[tuple[str, str]]:
    pairs = []
    with open(DATA / "quora" / "dev.tsv", encoding="utf-8", errors="replace") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 3 and parts[0] == "1":
                pairs.append((parts[1], parts[2]))
    return pairs[:n]


def model_path() -> str:
    from sentembed.model.resolve import resolve_model

    return str(resolve_model(os.environ.get("SENTEMBED_BENCH_MODEL", "all-mpnet-base-v2")))


def run_ours(path: str, pairs, batch: int, steps: int, warmup: int, precision: str) -> float:
    import sentembed
    from sentembed.training import TrainConfig, Trainer, TrainDataset, make_loss

    enc = sentembed.load(path, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(model=path, output_dir=out, batch_size=batch, max_steps=warmup + steps, lr=2e-5,
                          precision=precision, log_steps=1, show_progress=False, seed=0)
        trainer = Trainer(enc, [TrainDataset.from_rows("quora", pairs)], make_loss("mnrl"), cfg)
        # time between optimizer steps: data, forward, backward and update, as the reference's clock
        times: list[float] = []
        opt_step = trainer.optimizer.step
        last = [time.perf_counter()]

        def step_and_time(*a, **k):
            r = opt_step(*a, **k)
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now
            return r
        trainer.optimizer.step = step_and_time
        last[0] = time.perf_counter()
        trainer.train()
    t = sum(times[warmup:])
    return batch * steps / t


def run_reference(path: str, pairs, batch: int, steps: int, warmup: int, precision: str) -> float:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from transformers import TrainerCallback

    model = SentenceTransformer(path, device="cpu")
    ds = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [b for _, b in pairs]})
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    with tempfile.TemporaryDirectory() as out:
        args = SentenceTransformerTrainingArguments(
            output_dir=out, per_device_train_batch_size=batch, max_steps=warmup + steps, learning_rate=2e-5,
            bf16=precision == "bf16", use_cpu=True, report_to="none", save_strategy="no", logging_steps=1000,
            dataloader_num_workers=0, seed=0, disable_tqdm=True)
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=ds,
                                             loss=MultipleNegativesRankingLoss(model), callbacks=[Clock()])
        trainer.train()
    return batch * steps / sum(times[warmup:])


def cached_rss(batch: int = 256, mini: int = 32, steps: int = 1) -> None:
    """Child process: cached MNRL at batch 256 on Quora pairs; prints peak RSS in GiB."""
    import torch  # noqa: F401
    path = model_path()
    import sentembed
    from sentembed.training import TrainConfig, Trainer, TrainDataset, make_loss

    enc = sentembed.load(path, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(model=path, output_dir=out, batch_size=batch, max_steps=steps, show_progress=False)
        t = time.perf_counter()
        Trainer(enc, [TrainDataset.from_rows("quora", quora_pairs(5000))],
                make_loss("cached_mnrl", {"mini_batch_size": mini}), cfg).train()
        dt = time.perf_counter() - t
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(json.dumps({"cached_mnrl_batch": batch, "mini_batch": mini, "steps": steps,
                      "peak_rss_gib": round(peak, 2), "seconds": round(dt, 1)}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--cached-rss", action="store_true", help="only the cached-MNRL batch-256 memory check")
    ap.add_argument("--child-cached", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    if a.child_cached:
        cached_rss()
        return
    results: dict = {}
    if a.cached_rss:
        # a fresh process, so its peak RSS is the cached loss's alone
        out = subprocess.run([sys.executable, __file__, "--child-cached"], capture_output=True, text=True, check=True)
        results["cached"] = json.loads(out.stdout.strip().splitlines()[-1])
        print(results["cached"])
    else:
        path, pairs = model_path(), quora_pairs(2000)
        rows = []
        for _ in range(a.rounds):
            for prec in a.precisions.split(","):
                ref = run_reference(path, pairs, a.batch, a.steps, a.warmup, prec)
                ours = run_ours(path, pairs, a.batch, a.steps, a.warmup, prec)
                rows.append({"precision": prec, "reference_pairs_s": round(ref, 2), "ours_pairs_s": round(ours, 2),
                             "speedup": round(ours / ref, 2)})
                print(rows[-1], flush=True)
        results["throughput"] = rows
        from sentembed.model.cpu import cpu

        print(f"\nCPU: {cpu().describe()}")
        print("| precision | sentence-transformers pairs/s | sentembed pairs/s | speed-up |\n|---|---|---|---|")
        for r in rows:
            print(f"| {r['precision']} | {r['reference_pairs_s']} | {r['ours_pairs_s']} | {r['speedup']}x |")
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    name = "train_cached_rss.json" if a.cached_rss else "train.json"
    (res / name).write_text(json.dumps({**results, "args": vars(a), "torch_threads": torch.get_num_threads()}, indent=1))


if __name__ == "__main__":
    main()
