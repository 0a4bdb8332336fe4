"""Checkpoints: the model (a Sentence Transformers directory) plus the trainer's state —
optimizer, scheduler, sampler position and RNG — so a resumed run continues bit for bit.

Layout: OUTPUT/checkpoints/step-000120/{model/, trainer_state.pt}. Each checkpoint is built
in a hidden folder and renamed into place, so a crash never leaves half of one.

    >>> last = latest_checkpoint(Path("runs/x"))          # doctest: +SKIP
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..io import atomic_dir, atomic_write, move_into_place

STATE_FILE = "trainer_state.pt"
_STEP = re.compile(r"^step-(\d+)$")


def checkpoint_dir(output_dir: Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_dir(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _STEP.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: int(_STEP.match(p.name).group(1)))  # type: ignore[union-attr]


def latest_checkpoint(output_dir: Path) -> Path | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(output_dir: Path, step: int, enc: Any, state: dict[str, Any]) -> Path:
    """Write checkpoint `step` atomically and return its path."""
    final = checkpoint_dir(output_dir) / f"step-{step:06d}"
    with atomic_dir(final) as staging:
        enc.save(staging / "model")
        torch.save(state, staging / STATE_FILE)
    return final


def save_state(path: Path, state: dict[str, Any]) -> None:
    """Replace the trainer state of the finished checkpoint `path`, whole or not at all."""
    with atomic_write(Path(path) / STATE_FILE) as f:
        torch.save(state, f)


def load_state(path: Path) -> dict[str, Any]:
    # weights_only: the state holds tensors, numbers, strings and dicts only; nothing to unpickle
    return torch.load(Path(path) / STATE_FILE, map_location="cpu", weights_only=True)


def load_weights_into(pipeline: torch.nn.Module, path: Path) -> None:
    """Copy a checkpoint's weights into a live pipeline (keeps the optimizer's parameters)."""
    from sentembed.model import SentencePipeline
    from sentembed.model.classifier import CrossEncoderModel, model_kind

    model = Path(path) / "model"
    saved = CrossEncoderModel.load(model) if model_kind(model)[0] == "cross-encoder" else SentencePipeline.load(model)
    missing, unexpected = pipeline.load_state_dict(saved.state_dict(), strict=False)
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}")


def prune(output_dir: Path, keep: int, protect: set[Path]) -> None:
    """Delete all but the newest `keep` checkpoints, never one in `protect` (the best)."""
    found = list_checkpoints(output_dir)
    for p in found[:-keep] if keep > 0 else found:
        if p.resolve() not in {q.resolve() for q in protect}:
            shutil.rmtree(p, ignore_errors=True)


def install_dir(staging: Path, target: Path) -> None:
    """Move every entry of `staging` into `target`, each with an atomic rename, leaving the
    target's other entries (checkpoints/, the log) alone."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in staging.iterdir():
        move_into_place(entry, target / entry.name)
    shutil.rmtree(staging, ignore_errors=True)
