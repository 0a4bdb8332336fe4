"""Corpus embedding beyond one process: `embed_corpus(inputs, outdir, model, engine="ray")`.

Ray is imported only by the Ray engine, so the local engine and `sentembed --help` work
without the distributed extra."""
from __future__ import annotations

from sentembed.distributed.corpus import Block, Fields, read_embeddings
from sentembed.distributed.engines import embed_corpus

__all__ = ["embed_corpus", "read_embeddings", "Block", "Fields"]
