"""The saved-model pipeline: MPNet, tokenizer, pooling, normalize, dense; reading and
writing Sentence Transformers directories; resolving a model name to a directory.

This layer imports nothing else of sentembed. Its names load on first use, so resolving a
model name (`sentembed models list`) does not import torch."""
from __future__ import annotations

from .lazy import lazy_names

_HOMES = {
    "MPNet": "mpnet", "MPNetConfig": "mpnet", "ModelSettings": "pipeline", "SentencePipeline": "pipeline",
    "UnknownModuleError": "pipeline", "ModelNotFoundError": "resolve", "resolve_model": "resolve",
    "WeightsError": "weights",
}
__all__ = list(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
