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
    if getattr(loss, "cross_encoder", False):
        if evs:
            raise ValueError(f"loss {cfg.loss!r} trains a cross-encoder; the evaluators score embeddings "
                             "(leave `evaluators` empty; the held-out loss is logged)")
        return Trainer(load_reranker(cfg.model, cfg.seed), datasets, loss, cfg, evs).train()
    import sentembed

    enc = sentembed.load(cfg.model, device="cpu")
    return Trainer(enc, datasets, loss, cfg, evs).train()


def load_reranker(name_or_path: str, seed: int = 42) -> Any:
    """The cross-encoder to train: a CrossEncoder directory as it is, or a bi-encoder's (or a
    plain MPNet's) transformer with a fresh one-label head."""
    from ..cross_encoder import CrossEncoder, load_cross_encoder
    from ..model import resolve_model
    from ..model.classifier import model_kind

    path = resolve_model(name_or_path)
    if model_kind(path)[0] == "cross-encoder":
        reranker = load_cross_encoder(path, device="cpu", dtype="float32")
        if reranker.num_labels != 1:
            raise ValueError(f"{name_or_path} has {reranker.num_labels} labels; the reranker losses train one")
        return reranker
    return CrossEncoder.from_encoder(path, num_labels=1, seed=seed)
