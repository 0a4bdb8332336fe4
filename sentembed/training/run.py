"""Run training from a TrainConfig: load the model and data, check everything, train.

    >>> result = train(TrainConfig.from_yaml("examples/train_scifact.yaml"))   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import TrainConfig
from .evaluate import build_evaluators
from .losses import make_loss
from .trainer import Trainer, TrainResult, check_data


def train(cfg: TrainConfig, base: Path | None = None, evaluators: list[Any] | None = None) -> TrainResult:
    """Train as `cfg` says; relative data paths resolve against `base` (the config's folder).

    The loss, data and evaluators are all checked before the model is loaded, so a bad config
    fails in seconds, not after minutes of loading."""
    loss = make_loss(cfg.loss, cfg.loss_params)
    datasets = [spec.load(base) for spec in cfg.dataset_specs(base)]
    check_data(datasets, loss)
    evs = list(evaluators or []) + build_evaluators(cfg.evaluators)
    import sentembed

    enc = sentembed.load(cfg.model, device="cpu")
    return Trainer(enc, datasets, loss, cfg, evs).train()
