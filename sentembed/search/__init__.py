"""Search, mining, clustering and tagging over sentence embeddings.

>>> from sentembed.search import semantic_search, Index, paraphrase_mining, community_detection, kmeans, tag
"""
from .cluster import KMeansResult, community_detection, kmeans
from .exact import TopK, semantic_search
from .index import Hit, Index
from .mining import paraphrase_mining
from .tagging import Tag, tag

__all__ = [
    "Hit", "Index", "KMeansResult", "Tag", "TopK", "community_detection", "kmeans",
    "paraphrase_mining", "semantic_search", "tag",
]
