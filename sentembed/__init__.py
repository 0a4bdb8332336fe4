"""sentembed: MPNet sentence embeddings — encode, compare, search, cluster, tag, fine-tune, serve.

    import sentembed
    model = sentembed.load("all-mpnet-base-v2")
    model.encode("The cat sits outside")
    reranker = sentembed.load_cross_encoder("runs/reranker")      # (query, document) scores
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .model.lazy import lazy_names

if TYPE_CHECKING:
    from .cross_encoder import CrossEncoder, load_cross_encoder
    from .encoder import SentenceEncoder, load

__version__ = "0.1.0"
__all__ = ["SentenceEncoder", "load", "CrossEncoder", "load_cross_encoder", "__version__"]

# The encoder (and torch, 2-4 s of CPU) loads on first use: `sentembed --help` and the
# subpackages that need no model do not pay for it.
__getattr__ = lazy_names(__name__, {"SentenceEncoder": "encoder", "load": "encoder",
                                    "CrossEncoder": "cross_encoder", "load_cross_encoder": "cross_encoder"})
