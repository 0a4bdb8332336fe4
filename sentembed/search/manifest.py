"""An index's manifest.json: which model made it (name and an embedding fingerprint), its
dimension, similarity, kind and chunking. Written once, when the index is made, and last: a
directory without it is not an index yet."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import encode_as
from ..vectors import resolve_similarity
from . import ann
from .chunking import Chunker
from .store import write_atomic

FORMAT = "sentembed-index"
VERSION = 2  # 2: passages and the lexical table; version 1 indexes open as they were
PROBE = "sentembed index fingerprint: the quick brown fox jumps over the lazy dog."


def new_manifest(enc: Any, kind: str, params: ann.AnnParams, chunking: Chunker | None) -> dict[str, Any]:
    """The manifest of a new index for encoder `enc`."""
    similarity = resolve_similarity(enc)
    probe = encode_as(enc, [PROBE], "document")[0]
    if len(probe) != int(enc.dimension):
        raise ValueError(f"encoder returns {len(probe)} dimensions but says dimension={enc.dimension}")
    return {
        "format": FORMAT, "version": VERSION,
        "model": _model_name(str(getattr(enc, "name", "unknown"))),
        "dimension": int(enc.dimension), "normalizes": bool(getattr(enc, "normalizes", False)),
        "similarity": similarity, "kind": kind, "params": params.to_dict(),
        "fingerprint": [round(float(v), 6) for v in probe],
        "chunking": chunking and {"tokens": chunking.tokens, "overlap": chunking.overlap},
    }


def write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    write_atomic(path / "manifest.json", json.dumps(manifest, indent=1).encode())


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the index at `path`, checked to be one this sentembed reads."""
    mpath = path / "manifest.json"
    if not mpath.is_file():
        raise FileNotFoundError(f"no index at {path} (no manifest.json); create one with Index.create")
    manifest = json.loads(mpath.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{mpath} is not a sentembed index manifest")
    if manifest.get("version", 0) > VERSION:
        raise ValueError(f"index format version {manifest['version']} is newer than this sentembed ({VERSION})")
    return manifest


def check_encoder(manifest: dict[str, Any], enc: Any, path: Path) -> None:
    """Refuse an encoder that is not the index's model: dimension, similarity, and the
    fingerprint (names can differ for one model, a name or a path; its embeddings cannot)."""
    m = manifest
    name = getattr(enc, "name", "unknown")
    problems = []
    if int(enc.dimension) != m["dimension"]:
        problems.append(f"dimension {enc.dimension} != {m['dimension']}")
    if resolve_similarity(enc) != m["similarity"]:
        problems.append(f"similarity {resolve_similarity(enc)} != {m['similarity']}")
    if not problems:
        probe = encode_as(enc, [PROBE], "document")[0].astype(np.float64)
        ref = np.asarray(m["fingerprint"], dtype=np.float64)
        cos = float(probe @ ref / max(np.linalg.norm(probe) * np.linalg.norm(ref), 1e-12))
        scale = float(np.linalg.norm(probe) / max(np.linalg.norm(ref), 1e-12))
        if cos < 0.9999 or abs(scale - 1) > 1e-3:
            problems.append(f"its embeddings differ (fingerprint cosine {cos:.4f})")
    if problems:
        raise ValueError(
            f"index {path} was built with model {m['model']!r}; the given model {name!r} is different: "
            + "; ".join(problems) + ". Open it with the same model, or build a new index."
        )


def _model_name(name: str) -> str:
    """A model loaded from a local directory is recorded by its absolute path, so the index
    loads it from any working directory; a name stays a name."""
    path = Path(name).expanduser()
    return str(path.resolve()) if path.is_dir() else name
