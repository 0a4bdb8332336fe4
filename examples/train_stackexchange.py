"""A data_config.json mixing the StackExchange sites by weight, the mpnet_stackexchange_v1
card's rule (weight = int(lines / total_lines × total_weight)); a short MNRL run through
`sentembed train` lowers the held-out loss.

    nice .venv/bin/python examples/train_stackexchange.py --max-steps 40 --out runs/stackexchange

It writes, under --out: the train/held-out splits (last 10% of each file held out),
data_config.json, train_stackexchange.yaml, then trains with the CLI's code path and prints
the shares of 10,000 sampled batches against the weights and the held-out loss before/after.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SENTEMBED_DATA", ROOT.parent / "shared" / "data"))
SITES = ("beer", "coffee", "sothakur")
COLUMNS = {"title_body": ("title", "body"), "question_answer": ("question", "answer")}


def split(out: Path, held_fraction: float = 0.1) -> tuple[dict[str, Path], dict[str, Path]]:
    """Write <site>_<kind>.jsonl (train) and heldout/<site>_<kind>.jsonl as [text, text] rows."""
    train, held = {}, {}
    (out / "heldout").mkdir(parents=True, exist_ok=True)
    for site in SITES:
        for kind, (a, b) in COLUMNS.items():
            rows = [json.loads(line) for line in open(DATA / "stackexchange" / site / f"{kind}.jsonl", encoding="utf-8")]
            rows = [[r[a], r[b]] for r in rows if r.get(a) and r.get(b)]
            cut = int(len(rows) * (1 - held_fraction))
            name = f"{site}_{kind}"
            train[name], held[name] = out / f"{name}.jsonl", out / "heldout" / f"{name}.jsonl"
            train[name].write_text("".join(json.dumps(r) + "\n" for r in rows[:cut]), encoding="utf-8")
            held[name].write_text("".join(json.dumps(r) + "\n" for r in rows[cut:]), encoding="utf-8")
    return train, held


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-mpnet-base-v2")
    ap.add_argument("--out", default=str(ROOT / "runs" / "stackexchange"))
    ap.add_argument("--max-steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--total-weight", type=int, default=100)
    ap.add_argument("--base-loss", type=float, default=None, help="reuse the base model's held-out loss")
    a = ap.parse_args()
    import torch
    import yaml

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    from sentembed.training import TrainConfig, TrainDataset, load_data_config, make_loss, train
    from sentembed.training.evaluate import LossEvaluator
    from sentembed.training.samplers import MixtureBatchSampler

    work = Path(a.out + "-data")
    train_files, held_files = split(work)
    # names relative to the config, as in the 1B-pairs recipe
    lines = {k: sum(1 for _ in open(v, encoding="utf-8")) for k, v in train_files.items()}
    from sentembed.training.data import weights_from_lines

    weights = weights_from_lines(lines, a.total_weight)
    entries = [{"name": p.name, "lines": lines[k], "weight": weights[k]} for k, p in train_files.items()]
    (work / "data_config.json").write_text(json.dumps(entries, indent=1) + "\n")
    print("data_config.json:", json.dumps(entries))

    specs = load_data_config(work / "data_config.json")
    data = [s.load() for s in specs]
    sampler = MixtureBatchSampler([d.rows for d in data], [d.weight for d in data], a.batch_size, seed=0,
                                  num_batches=10_000)
    counts = [0] * len(data)
    for ds, _ in sampler:
        counts[ds] += 1
    total_w = sum(d.weight for d in data)
    shares = {d.name: {"weight_share": round(d.weight / total_w, 4), "batch_share": round(c / 10_000, 4)}
              for d, c in zip(data, counts)}
    print("10,000 batches:", json.dumps(shares))

    loss_params = {"scale": 20.0, "similarity": "cosine", "symmetric": True}
    held = TrainDataset.from_rows("heldout", [r for p in held_files.values() for r in
                                              (json.loads(line) for line in open(p, encoding="utf-8"))])
    ev = LossEvaluator(held, make_loss("mnrl", loss_params), batch_size=a.batch_size, name="heldout")
    cfg_dict = dict(model=a.model, output_dir=a.out, data_config=str(work / "data_config.json"), loss="mnrl",
                    loss_params=loss_params, batch_size=a.batch_size, max_steps=a.max_steps, lr=2e-5,
                    warmup_steps=min(500, a.max_steps // 10), max_seq_length=128, precision="bf16",
                    eval_steps=a.max_steps, log_steps=5, seed=42,
                    model_name="all-mpnet-base-v2 on a StackExchange mixture")
    (work / "train_stackexchange.yaml").write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    import sentembed

    if a.base_loss is not None:
        before = {"loss": a.base_loss}
    else:
        base = sentembed.load(a.model, device="cpu")
        base.max_seq_length = 128
        before = ev(base)
        del base
    print("held-out loss before:", before, flush=True)
    result = train(TrainConfig.from_yaml(work / "train_stackexchange.yaml"), evaluators=[ev])
    after = result.eval_results
    print("held-out loss after:", after, flush=True)
    report = {"data_config": entries, "batch_shares": shares, "heldout_loss_before": before["loss"],
              "heldout_loss_after": after.get("heldout/loss"), "steps": result.steps,
              "heldout_pairs": len(held), "args": vars(a)}
    Path(a.out, "stackexchange_results.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
