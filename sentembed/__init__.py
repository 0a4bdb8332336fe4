"""sentembed: MPNet sentence embeddings — encode, compare, search, cluster, tag, fine-tune, serve.

    import sentembed
    model = sentembed.load("all-mpnet-base-v2")
    model.encode("The cat sits outside")
"""
from .encoder import SentenceEncoder, load

__version__ = "0.1.0"
__all__ = ["SentenceEncoder", "load", "__version__"]
