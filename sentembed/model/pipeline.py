"""The module pipeline of a Sentence Transformers directory: read, run, write.

    pipeline = SentencePipeline.load(path)
    features = pipeline.tokenize(["a sentence"])
    embedding = pipeline(features)["sentence_embedding"]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import torch
from torch import nn

from ..io import atomic_dir
from .classifier import ModelKindError, model_kind
from .dense import Dense
from .files import read_json, write_json
from .normalize import Normalize
from .pooling import Pooling
from .transformer import Transformer

# Module types by the last part of the reference's class path, which moved between releases
# (sentence_transformers.models.Pooling, ...sentence_transformer.modules.pooling.Pooling).
MODULE_TYPES: dict[str, type[nn.Module]] = {
    "Transformer": Transformer, "Pooling": Pooling, "Normalize": Normalize, "Dense": Dense,
}
SAVED_TYPE_NAMES = {cls: f"sentence_transformers.models.{name}" for name, cls in MODULE_TYPES.items()}


class UnknownModuleError(ValueError):
    pass


@dataclass
class ModelSettings:
    """config_sentence_transformers.json: prompts and the similarity the model was trained for."""
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None
    similarity_fn_name: str | None = None

    @classmethod
    def load(cls, path: Path) -> "ModelSettings":
        file = Path(path) / "config_sentence_transformers.json"
        raw = read_json(file) if file.is_file() else {}
        # The similarity name is checked by the encoder (sentembed.vectors knows the names).
        settings = cls(dict(raw.get("prompts") or {}), raw.get("default_prompt_name"), raw.get("similarity_fn_name"))
        if settings.default_prompt_name and settings.default_prompt_name not in settings.prompts:
            raise ValueError(f"{file}: default_prompt_name {settings.default_prompt_name!r} is not among the prompts {list(settings.prompts)}")
        return settings

    def save(self, path: Path, versions: dict[str, str]) -> None:
        write_json(Path(path) / "config_sentence_transformers.json", {
            "__version__": versions,
            "prompts": self.prompts,
            "default_prompt_name": self.default_prompt_name,
            "similarity_fn_name": self.similarity_fn_name or "cosine",
        })


class SentencePipeline(nn.Sequential):
    """Transformer, Pooling, then optional Dense and Normalize, run in order on a features dict."""

    @property
    def transformer(self) -> Transformer:
        return self[0]

    @property
    def dimension(self) -> int:
        width = self.transformer.dimension
        for module in self:
            if isinstance(module, Pooling):
                width = module.output_dimension
            elif isinstance(module, Dense):
                width = module.output_dimension
        return width

    @property
    def normalizes(self) -> bool:
        return isinstance(self[-1], Normalize)

    def tokenize(self, texts: list[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return self.transformer.tokenizer(texts, device)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        for module in self:
            features = module(features)
        return features

    @classmethod
    def load(cls, path: Path) -> "SentencePipeline":
        path = Path(path)
        kind, evidence = model_kind(path)
        if kind == "cross-encoder":
            raise ModelKindError(f"{path} holds a cross-encoder ({evidence}): it scores (query, document) pairs "
                                 "and makes no embeddings; load it with sentembed.load_cross_encoder")
        modules_file = path / "modules.json"
        if not modules_file.is_file():
            # A plain Hugging Face checkpoint (microsoft/mpnet-base): mean pooling, as the reference does.
            transformer = Transformer.load(path)
            return cls(transformer, Pooling(transformer.dimension, "mean"))
        entries = read_json(modules_file)
        if not isinstance(entries, list) or not entries:
            raise ValueError(f"{modules_file} must be a non-empty list of modules")
        modules = []
        for entry in sorted(entries, key=lambda e: e.get("idx", 0)):
            type_name = str(entry.get("type", ""))
            kind = MODULE_TYPES.get(type_name.rsplit(".", 1)[-1])
            if kind is None:
                raise UnknownModuleError(
                    f"{modules_file}: module type {type_name!r} is not supported; "
                    f"sentembed runs {', '.join(MODULE_TYPES)}"
                )
            modules.append(kind.load(path / entry.get("path", "")))
        if not isinstance(modules[0], Transformer) or any(isinstance(m, Transformer) for m in modules[1:]):
            raise UnknownModuleError(f"{modules_file}: the first module, and only the first, must be a Transformer")
        return cls(*modules)

    def save(self, path: Path, settings: ModelSettings) -> None:
        """Write the directory atomically: a new tree is built beside `path`, then swapped in."""
        with atomic_dir(path) as staging:
            entries = []
            for idx, module in enumerate(self):
                folder = "" if idx == 0 else f"{idx}_{type(module).__name__}"
                (staging / folder).mkdir(parents=True, exist_ok=True)
                module.save(staging / folder)
                entries.append({"idx": idx, "name": str(idx), "path": folder, "type": SAVED_TYPE_NAMES[type(module)]})
            write_json(staging / "modules.json", entries)
            settings.save(staging, _versions())


def _versions() -> dict[str, str]:
    try:
        ours = metadata.version("sentembed")
    except metadata.PackageNotFoundError:
        ours = "unknown"
    return {"sentence_transformers": "3.0.0", "sentembed": ours, "pytorch": torch.__version__}
