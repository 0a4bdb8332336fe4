"""The training loop: AdamW with linear warmup and decay, gradient clipping, bf16 autocast,
gradient checkpointing and accumulation, evaluation and checkpoints every N steps, keeping
the best, exact resume, and DDP (torchrun, gloo) with in-batch negatives gathered across ranks.

    >>> enc = sentembed.load("all-mpnet-base-v2")
    >>> data = [TrainDataset.from_file("pairs.jsonl")]
    >>> result = Trainer(enc, data, make_loss("mnrl"), TrainConfig(output_dir="runs/x")).train()
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .config import TrainConfig
from .data import DataError, TrainDataset
from .losses import EmbeddingLoss
from .samplers import MixtureBatchSampler, shard


class TrainingError(RuntimeError):
    """Training stopped; the message names the step and the last good checkpoint."""


@dataclass
class TrainResult:
    output_dir: Path
    steps: int
    final_loss: float
    best_metric: float | None
    best_checkpoint: Path | None
    log: list[dict] = field(default_factory=list)
    eval_results: dict[str, float] = field(default_factory=dict)


def dist_info() -> tuple[int, int]:
    """(rank, world size); initialises gloo when launched by torchrun."""
    dist = torch.distributed
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def check_data(datasets: Sequence[TrainDataset], loss: EmbeddingLoss) -> None:
    """Every problem we can see before the first step: empty data, bad weights, columns."""
    if not datasets:
        raise DataError("no training datasets")
    for ds in datasets:
        if len(ds) == 0:
            raise DataError(f"dataset {ds.name!r} ({ds.source or 'memory'}) is empty")
        if not (isinstance(ds.weight, (int, float)) and math.isfinite(ds.weight) and ds.weight > 0):
            raise DataError(f"dataset {ds.name!r}: weight must be a number > 0, got {ds.weight!r}")
        loss.check_columns(ds.n_columns, ds.name)
        if loss.needs_label and ds.labels is None:
            raise DataError(f"dataset {ds.name!r}: {type(loss).__name__} needs a label column (label/score)")


def linear_schedule(warmup: int, total: int) -> Callable[[int], float]:
    """LR factor: 0 -> 1 over `warmup` steps, then 1 -> 0 at `total`."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)   # never exactly 0: the first step already learns
        return max(0.0, (total - step) / max(1, total - warmup))
    return factor


class Trainer:
    """Fine-tune `enc` (a sentembed.SentenceEncoder) on `datasets` with `loss`.

    evaluators: callables `evaluator(enc) -> dict[str, float]` with `primary_metric`
    (sentembed.evaluation's contract); the best primary metric's checkpoint is kept."""

    def __init__(self, enc: Any, datasets: Sequence[TrainDataset], loss: EmbeddingLoss,
                 config: TrainConfig, evaluators: Sequence[Any] = ()) -> None:
        check_data(datasets, loss)
        self.enc, self.datasets, self.loss, self.cfg = enc, list(datasets), loss, config
        self.evaluators = list(evaluators)
        self.rank, self.world = dist_info()
        self.out = Path(config.output_dir)
        # training may truncate shorter than the model serves (the 1B recipe trained at 128);
        # the saved model keeps its own max_seq_length
        self.serve_max_seq_length = enc.max_seq_length
        if config.max_seq_length:
            enc.max_seq_length = config.max_seq_length
        self.model = enc.pipeline
        self.model.transformer.mpnet.gradient_checkpointing = config.gradient_checkpointing
        per_epoch = max(1, sum(map(len, datasets)) // (config.batch_size * self.world * config.grad_accum))
        self.total_steps = config.max_steps or per_epoch * config.epochs
        self.sampler = MixtureBatchSampler(
            [ds.rows for ds in datasets], [ds.weight for ds in datasets],
            batch_size=config.batch_size * self.world, seed=config.seed, round_robin=config.round_robin,
            num_batches=self.total_steps * config.grad_accum)
        decay = [p for n, p in self.model.named_parameters() if not _no_decay(n)]
        no_decay = [p for n, p in self.model.named_parameters() if _no_decay(n)]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=config.lr, fused=_fused_ok())
        warmup = config.warmup_steps or int(config.warmup_ratio * self.total_steps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, linear_schedule(warmup, self.total_steps))
        self.step = 0
        self.log: list[dict] = []
        self.best: tuple[float, str] | None = None      # (metric, checkpoint path)
        self.last_checkpoint: Path | None = None

    # -- one batch ---------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.cfg.precision == "bf16":
            return torch.autocast(self.enc.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def embed(self, texts: list[str]) -> torch.Tensor:
        with self._autocast():
            return self.model(self.enc.tokenize(texts))["sentence_embedding"]

    def embed_columns(self, columns: list[list[str]]) -> list[torch.Tensor]:
        """One forward pass for all columns when their lengths are alike (a bigger GEMM is
        faster on CPU), else one per column so short anchors are not padded to documents."""
        if len(columns) > 1:
            feats = [self.enc.tokenize(c) for c in columns]
            widths = [f["input_ids"].shape[1] for f in feats]
            joint = sum(len(c) for c in columns) * max(widths)
            separate = sum(len(c) * w for c, w in zip(columns, widths))
            if joint <= 1.2 * separate:
                flat = [t for c in columns for t in c]
                out = self.embed(flat)
                return list(out.split([len(c) for c in columns]))
            with self._autocast():
                return [self.model(f)["sentence_embedding"] for f in feats]
        return [self.embed(columns[0])]

    def _batch(self, ds_index: int, rows: list[int]) -> tuple[list[list[str]], torch.Tensor | None]:
        ds = self.datasets[ds_index]
        rows = shard(rows, self.rank, self.world)
        n_cols = ds.n_columns if self.loss.max_columns is None else min(ds.n_columns, self.loss.max_columns)
        columns = [[ds.rows[r][c] for r in rows] for c in range(n_cols)]
        labels = torch.tensor([ds.labels[r] for r in rows], dtype=torch.float32) if ds.labels is not None else None
        return columns, labels

    def score_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> torch.Tensor:
        """A cross-encoder's logits (first label) for (query, document) pairs, with a graph."""
        with self._autocast():
            return self.model(self.enc.tokenize_pairs(queries, documents))["scores"][:, 0]

    def micro_step(self, ds_index: int, rows: list[int]) -> torch.Tensor:
        columns, labels = self._batch(ds_index, rows)
        scale = 1.0 / self.cfg.grad_accum
        if getattr(self.loss, "cross_encoder", False):   # cross_encoder_losses.py: pairs, not embeddings
            loss = self.loss(self.score_pairs, columns, labels)
            (loss * scale).backward()
            return loss.detach()
        if self.loss.cached:
            return self.loss.step(self.embed, columns, labels, grad_scale=scale)
        loss = self.loss(self.embed_columns(columns), labels)
        (loss * scale).backward()
        return loss.detach()

    def _sync_grads(self) -> None:
        """Average gradients over ranks (the DDP all-reduce, done by hand: one flat buffer)."""
        if self.world == 1:
            return
        grads = [p.grad for p in self.model.parameters() if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    # -- state -------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "sampler": self.sampler.state_dict(),
                "rng": torch.get_rng_state(), "log": self.log,
                "best": list(self.best) if self.best else None, "config": self.cfg.to_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = state["step"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.sampler.load_state_dict(state["sampler"])
        torch.set_rng_state(state["rng"])
        self.log = list(state["log"])
        self.best = tuple(state["best"]) if state["best"] else None  # type: ignore[assignment]

    def resume_from(self, path: Path) -> None:
        ckpt.load_weights_into(self.model, path)
        self.load_state_dict(ckpt.load_state(path))
        self.last_checkpoint = path

    def save_checkpoint(self) -> Path | None:
        if self.rank == 0:
            self.last_checkpoint = ckpt.save_checkpoint(self.out, self.step, self.enc, self.state_dict())
            protect = {Path(self.best[1])} if self.best else set()
            ckpt.prune(self.out, self.cfg.save_total_limit, protect | {self.last_checkpoint})
        self._barrier()
        return self.last_checkpoint

    def _barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    # -- evaluation --------------------------------------------------------------------
    def evaluate(self) -> dict[str, float]:
        results: dict[str, float] = {}
        if not self.evaluators or self.rank != 0:
            return results
        self.model.eval()
        rng = torch.get_rng_state()    # evaluation must not shift the training's dropout
        try:
            for i, ev in enumerate(self.evaluators):
                name = getattr(ev, "name", None) or type(ev).__name__
                out = ev(self.enc)
                results.update({f"{name}/{k}": float(v) for k, v in out.items()})
                if i == 0:
                    results["primary"] = float(out[ev.primary_metric])
                    if not getattr(ev, "greater_is_better", True):
                        results["primary"] = -results["primary"]
        finally:
            torch.set_rng_state(rng)
            self.model.train()
        return results

    def _log(self, entry: dict) -> None:
        self.log.append(entry)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            with open(self.out / "train_log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(entry) + "\n")

    # -- the loop ----------------------------------------------------------------------
    def train(self) -> TrainResult:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        if cfg.resume and (last := ckpt.latest_checkpoint(self.out)) is not None:
            self.resume_from(last)
        elif self.rank == 0 and (self.out / "train_log.jsonl").exists():
            (self.out / "train_log.jsonl").unlink()     # a fresh run starts a fresh log
        self.model.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", unit="step",
                   disable=not cfg.show_progress or self.rank != 0)
        batches = iter(self.sampler)
        eval_every = cfg.eval_steps
        save_every = cfg.save_steps or cfg.eval_steps
        window, t0, examples, loss_value = [], time.perf_counter(), 0, float("nan")
        while self.step < self.total_steps:
            losses, names = [], []
            for _ in range(cfg.grad_accum):
                ds_index, rows = next(batches)
                losses.append(self.micro_step(ds_index, rows))
                names.append(self.datasets[ds_index].name)
                examples += len(rows)
            loss_value = float(torch.stack(losses).mean())
            if self.world > 1:   # every rank must agree to stop, or the others hang
                t = torch.tensor([loss_value]); torch.distributed.all_reduce(t); loss_value = float(t) / self.world
            if not math.isfinite(loss_value):
                self._nan_stop(loss_value, names)
            self._sync_grads()
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm))
            if not math.isfinite(grad_norm):
                self._nan_stop(grad_norm, names, what="gradient norm")
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            window.append(loss_value)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if self.step % cfg.log_steps == 0 or self.step == self.total_steps:
                dt = time.perf_counter() - t0
                self._log({"step": self.step, "loss": sum(window) / len(window), "lr": self.scheduler.get_last_lr()[0],
                           "grad_norm": grad_norm, "examples_per_s": examples / dt if dt else 0.0,
                           "dataset": names[-1]})
                window, t0, examples = [], time.perf_counter(), 0
            at_eval = eval_every and (self.step % eval_every == 0 or self.step == self.total_steps)
            at_save = save_every and (self.step % save_every == 0 or self.step == self.total_steps)
            if at_eval:
                self._eval_and_keep()
            elif at_save:
                self.save_checkpoint()
        bar.close()
        return self._finish(loss_value)

    def _eval_and_keep(self) -> None:
        results = self.evaluate()
        path = self.save_checkpoint()
        if self.rank == 0 and results:
            self._log({"step": self.step, "eval": results})
            if self.best is None or results["primary"] > self.best[0]:
                self.best = (results["primary"], str(path))
                # re-save the state so a resumed run knows the best too
                ckpt.save_state(path, self.state_dict())

    def _nan_stop(self, value: float, names: list[str], what: str = "loss") -> None:
        kept = self.last_checkpoint or "none (no checkpoint was written before this step)"
        raise TrainingError(f"{what} is {value} at step {self.step + 1} (dataset {names[-1]!r}); training "
                            f"stopped before the update. Last good checkpoint: {kept}")

    def _finish(self, final_loss: float) -> TrainResult:
        """Write the final (or best) model with its card into output_dir."""
        cfg = self.cfg
        best_path = Path(self.best[1]) if self.best else None
        if self.rank == 0 and cfg.load_best_at_end and best_path and best_path.is_dir():
            ckpt.load_weights_into(self.model, best_path)
        eval_results = {}
        for entry in self.log:
            if "eval" in entry and (best_path is None or entry["step"] == int(best_path.name.split("-")[1])):
                eval_results = entry["eval"]
        if self.rank == 0:
            from .card import write_card
            from .plots import write_training_plots

            self.model.eval()
            self.enc.max_seq_length = self.serve_max_seq_length
            staging = Path(tempfile.mkdtemp(dir=self.out, prefix=".final."))
            try:
                self.enc.save(staging / "model")
                plots = write_training_plots(self.log, staging / "model")
                write_card(staging / "model", self.enc, cfg, self.datasets, self.loss, self.log, eval_results,
                           self.total_steps, [p.name for p in plots])
                ckpt.install_dir(staging / "model", self.out)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        self._barrier()
        return TrainResult(self.out, self.step, final_loss, self.best[0] if self.best else None,
                           best_path, self.log, eval_results)


def _fused_ok() -> bool:
    # the fused AdamW kernel does one pass over parameters, grads and moments instead of
    # several: about a tenth of a CPU step for a 110M-parameter model
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
        return True
    except (RuntimeError, TypeError):
        return False


def _no_decay(name: str) -> bool:
    # biases and LayerNorm weights are not decayed (the usual BERT-family recipe)
    return name.endswith(".bias") or "LayerNorm" in name or "layer_norm" in name or ".norm" in name.lower()
