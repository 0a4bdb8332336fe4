"""A tiny deterministic stand-in encoder: hashed bag of words, so similar texts score higher."""
from __future__ import annotations

import hashlib

import numpy as np


class HashEncoder:
    def __init__(self, dimension: int = 32, similarity: str = "cosine", normalize: bool = True, name: str = "hash-encoder", seed: int = 0):
        self.dimension = dimension
        self.similarity_fn_name = similarity
        self.normalizes = normalize
        self.name = name
        self.seed = seed
        self.calls = 0
        self._cache: dict[str, np.ndarray] = {}

    def _word(self, w: str) -> np.ndarray:
        v = self._cache.get(w)
        if v is None:
            v = self._cache[w] = self._make(w)
        return v

    def _make(self, w: str) -> np.ndarray:
        h = int.from_bytes(hashlib.sha1(f"{self.seed}:{w}".encode()).digest()[:8], "little")
        return np.random.default_rng(h).standard_normal(self.dimension)

    def encode(self, texts, **kw):
        self.calls += 1
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i] += self._word(w.strip(".,?!"))
            if not t.split():
                out[i] = self._word("<empty>")
        if self.normalizes:
            out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out[0] if single else out

    def encode_query(self, texts, **kw):
        return self.encode(texts, **kw)

    def encode_document(self, texts, **kw):
        return self.encode(texts, **kw)
