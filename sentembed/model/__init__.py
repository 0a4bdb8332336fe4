"""The saved-model pipeline: MPNet, tokenizer, pooling, normalize, dense; reading and
writing Sentence Transformers directories; resolving a model name to a directory.

This layer imports nothing else of sentembed."""
from .mpnet import MPNet, MPNetConfig
from .pipeline import ModelSettings, SentencePipeline, UnknownModuleError
from .resolve import ModelNotFoundError, resolve_model
from .weights import WeightsError

__all__ = [
    "MPNet", "MPNetConfig", "ModelSettings", "SentencePipeline", "UnknownModuleError",
    "ModelNotFoundError", "resolve_model", "WeightsError",
]
