"""Embedding precisions smaller than float32, as the reference computes them.

int8/uint8 map each dimension's range over the batch onto 256 levels; binary keeps the
sign bit, 8 dimensions a byte (signed for "binary", unsigned for "ubinary")."""
from __future__ import annotations

import numpy as np

PRECISIONS = ("float32", "int8", "uint8", "binary", "ubinary")


def quantize(embeddings: np.ndarray, precision: str, calibration: np.ndarray | None = None) -> np.ndarray:
    """Quantize a (n, dim) float32 matrix.

    >>> quantize(np.array([[0.5, -0.5, 0.1, 0, 1, 1, 1, 1]], np.float32), "ubinary")
    array([[175]], dtype=uint8)
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "float32":
        return embeddings
    if precision in ("binary", "ubinary"):
        packed = np.packbits(embeddings > 0, axis=-1)
        return (packed.astype(np.int16) - 128).astype(np.int8) if precision == "binary" else packed
    reference = embeddings if calibration is None else calibration
    if len(embeddings) == 0:
        return embeddings.astype(np.int8 if precision == "int8" else np.uint8)
    if len(reference) < 2:
        raise ValueError(f"{precision} ranges come from the batch itself: encode at least 2 texts, or pass calibration")
    starts = reference.min(axis=0)
    steps = (reference.max(axis=0) - starts) / 255
    steps[steps == 0] = 1.0  # a constant dimension maps to one level instead of dividing by zero
    levels = np.clip(np.floor((embeddings - starts) / steps), 0, 255)
    return (levels - 128).astype(np.int8) if precision == "int8" else levels.astype(np.uint8)
