"""Search, mining, clustering and tagging over sentence embeddings.

>>> from sentembed.search import semantic_search, Index, paraphrase_mining, community_detection, kmeans, tag

The names load on first use, so `sentembed --help` does not import torch or faiss.
"""
from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "Hit": "index", "Index": "index", "KMeansResult": "cluster", "Tag": "tagging", "TopK": "exact",
    "community_detection": "cluster", "kmeans": "cluster", "paraphrase_mining": "mining",
    "semantic_search": "exact", "tag": "tagging",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
