"""TrainConfig: everything one training run needs, read from YAML and overridable field by
field (the CLI turns every field into a flag).

    >>> cfg = TrainConfig(model="all-mpnet-base-v2", output_dir="runs/x",
    ...                   datasets=[{"path": "pairs.jsonl", "weight": 2}])
    >>> cfg.lr
    2e-05
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .data import DataError, DatasetSpec, load_data_config


@dataclass
class TrainConfig:
    """One training run. Datasets come from `datasets` (list of {path, weight, name, columns,
    label_column, limit}) and/or `data_config` (a data_config.json)."""

    model: str = "all-mpnet-base-v2"
    output_dir: str = "runs/model"
    datasets: list[dict] = field(default_factory=list)
    data_config: str | None = None
    loss: str = "mnrl"
    loss_params: dict = field(default_factory=dict)
    batch_size: int = 32                 # per process; the global batch is × world size
    epochs: int = 1
    max_steps: int | None = None         # overrides epochs
    lr: float = 2e-5
    warmup_steps: int = 0
    warmup_ratio: float = 0.0            # used when warmup_steps is 0
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    precision: str = "fp32"              # fp32 | bf16 (autocast; weights stay fp32)
    gradient_checkpointing: bool = False
    grad_accum: int = 1
    max_seq_length: int | None = None
    round_robin: bool = False
    seed: int = 42
    evaluators: list[dict] = field(default_factory=list)   # {"type": "<class in sentembed.evaluation>", ...}
    eval_steps: int | None = None        # evaluate (and checkpoint) every N steps
    save_steps: int | None = None        # checkpoint every N steps (default: eval_steps)
    save_total_limit: int = 2            # checkpoints kept besides the best
    load_best_at_end: bool = True
    resume: bool = False                 # continue from the last checkpoint in output_dir
    log_steps: int = 10
    show_progress: bool = True
    model_name: str | None = None        # a name for the model card

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {self.precision!r}")
        for name in ("batch_size", "epochs", "grad_accum", "log_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")

    def dataset_specs(self, base: Path | None = None) -> list[DatasetSpec]:
        specs = []
        known = {f.name for f in fields(DatasetSpec)}
        for i, d in enumerate(self.datasets):
            if isinstance(d, str):
                d = {"path": d}
            if "path" not in d:
                raise DataError(f"datasets[{i}] needs a 'path'")
            extra = {k: v for k, v in d.items() if k not in known}
            if extra:
                raise DataError(f"datasets[{i}]: unknown keys {sorted(extra)}; allowed {sorted(known - {'extra'})}")
            p = Path(d["path"])
            specs.append(DatasetSpec(**{**d, "path": str(p if p.is_absolute() or base is None else base / p)}))
        if self.data_config:
            cfg = Path(self.data_config)
            specs += load_data_config(cfg if cfg.is_absolute() or base is None else base / cfg)
        if not specs:
            raise DataError("no training data: give `datasets` or `data_config`")
        return specs

    def non_defaults(self) -> dict[str, Any]:
        """Fields that differ from the defaults, for the model card."""
        default = TrainConfig()
        return {f.name: getattr(self, f.name) for f in fields(self)
                if getattr(self, f.name) != getattr(default, f.name) and f.name not in ("datasets", "show_progress")}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "TrainConfig":
        """Read YAML (or JSON); `overrides` (None values ignored) win over the file."""
        import yaml

        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a mapping of config fields")
        return cls.from_dict({**raw, **{k: v for k, v in overrides.items() if v is not None}})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise ValueError(f"unknown config field(s) {unknown}; valid: {sorted(names)}")
        raw = dict(raw)
        for key in ("datasets", "loss_params", "evaluators"):
            if isinstance(raw.get(key), str):   # flags pass structures as JSON
                raw[key] = json.loads(raw[key])
        return cls(**raw)
