"""The saved-model pipeline: MPNet, tokenizer, pooling, normalize, dense; reading and
writing Sentence Transformers directories; resolving a model name to a directory.

This layer imports nothing else of sentembed. Its names load on first use, so resolving a
model name (`sentembed models list`) does not import torch."""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "MPNet": "mpnet", "MPNetConfig": "mpnet", "ModelSettings": "pipeline", "SentencePipeline": "pipeline",
    "UnknownModuleError": "pipeline", "ModelNotFoundError": "resolve", "resolve_model": "resolve",
    "WeightsError": "weights",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
