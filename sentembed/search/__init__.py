"""Search, mining, clustering and tagging over sentence embeddings.

>>> from sentembed.search import semantic_search, Index, paraphrase_mining, community_detection, kmeans, tag
"""
from .cluster import KMeansResult, community_detection, kmeans
from .exact import TopK, semantic_search
from .index import Hit, Index
from .mining import paraphrase_mining
from .similarity import SIMILARITIES, pairwise, resolve_similarity
from .tagging import Tag, tag

__all__ = [
    "Hit", "Index", "KMeansResult", "SIMILARITIES", "Tag", "TopK", "community_detection", "kmeans",
    "pairwise", "paraphrase_mining", "resolve_similarity", "semantic_search", "tag",
]
