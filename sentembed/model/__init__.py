"""The saved-model pipeline: MPNet, tokenizer, pooling, normalize, dense; reading and
writing Sentence Transformers directories; resolving a model name to a directory.

This layer imports nothing else of sentembed."""
from .mpnet import MPNet, MPNetConfig
from .pipeline import (SIMILARITY_FUNCTIONS, ModelSettings, SentencePipeline, UnknownModuleError,
                       check_similarity_name)
from .resolve import ModelNotFoundError, resolve_model
from .weights import WeightsError

__all__ = [
    "MPNet", "MPNetConfig", "SIMILARITY_FUNCTIONS", "ModelSettings", "SentencePipeline", "UnknownModuleError",
    "check_similarity_name", "ModelNotFoundError", "resolve_model", "WeightsError",
]
