"""Evaluators for training: the held-out loss, and building sentembed.evaluation's
evaluators from config entries.

    >>> ev = LossEvaluator(heldout_dataset, make_loss("mnrl"), batch_size=32)   # doctest: +SKIP
    >>> ev(enc)                                                                   # doctest: +SKIP
    {'loss': 0.42}
"""
from __future__ import annotations

from typing import Any

import torch

from .data import TrainDataset
from .losses import EmbeddingLoss


class LossEvaluator:
    """Mean loss over a held-out dataset in fixed, unshuffled batches (lower is better)."""

    primary_metric = "loss"
    greater_is_better = False

    def __init__(self, dataset: TrainDataset, loss: EmbeddingLoss, batch_size: int = 32,
                 name: str | None = None) -> None:
        self.dataset, self.loss, self.batch_size = dataset, loss, batch_size
        self.name = name or f"heldout-{dataset.name}"

    @torch.no_grad()
    def __call__(self, enc: Any) -> dict[str, float]:
        was_training = enc.pipeline.training
        enc.pipeline.eval()
        total, n = 0.0, 0
        rows, labels = self.dataset.rows, self.dataset.labels
        ncol = self.dataset.n_columns if self.loss.max_columns is None else self.loss.max_columns
        try:
            for start in range(0, len(rows) - self.batch_size + 1, self.batch_size):
                chunk = rows[start:start + self.batch_size]
                embs = [enc.pipeline(enc.tokenize([r[c] for r in chunk]))["sentence_embedding"] for c in range(ncol)]
                lab = torch.tensor(labels[start:start + self.batch_size]) if labels is not None else None
                total += float(self.loss(embs, lab))
                n += 1
        finally:
            enc.pipeline.train(was_training)
        return {"loss": total / max(n, 1)}


def build_evaluators(entries: list[dict]) -> list[Any]:
    """Config entries -> evaluators: `{"type": "STSEvaluator.from_file", "path": "sts-dev.csv"}`
    names a class or `Class.classmethod` of sentembed.evaluation, called with the other keys
    (e.g. `{"type": "RetrievalEvaluator.from_beir", "folder": "data/scifact", "split": "test"}`)."""
    if not entries:
        return []
    import sentembed.evaluation as evaluation

    out = []
    for i, entry in enumerate(entries):
        entry = dict(entry)
        kind = entry.pop("type", None)
        factory: Any = evaluation
        for part in (kind or "").split("."):
            factory = getattr(factory, part, None) if part and factory is not None else None
        if factory is None:
            names = [n for n in dir(evaluation) if not n.startswith("_")]
            raise ValueError(f"evaluators[{i}]: unknown type {kind!r}; sentembed.evaluation has {names}")
        out.append(factory(**entry))
    return out
