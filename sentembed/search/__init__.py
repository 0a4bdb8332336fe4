"""Search, mining, clustering and tagging over sentence embeddings.

>>> from sentembed.search import semantic_search, Index, paraphrase_mining, community_detection, kmeans, tag

The names load on first use, so `sentembed --help` does not import torch or faiss.
"""
from __future__ import annotations

from ..model.lazy import lazy_names

_HOMES = {
    "Hit": "index", "Index": "index", "KMeansResult": "cluster", "Tag": "tagging", "TopK": "exact",
    "community_detection": "cluster", "kmeans": "cluster", "paraphrase_mining": "mining",
    "semantic_search": "exact", "tag": "tagging",
}
__all__ = list(_HOMES)

__getattr__ = lazy_names(__name__, _HOMES)
