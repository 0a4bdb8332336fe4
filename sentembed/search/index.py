"""`Index`: a persistent, searchable collection of embedded texts in a directory.

Exact search (the default) scans the memory-mapped vectors with the chunked top-k of
`exact.py`; kind="hnsw" or "ivfpq" adds a FAISS structure for large collections. Texts, ids
and JSON metadata live in SQLite. See `store.py` for why a killed writer cannot damage it.

>>> idx = Index.create("my-index", enc)                       # doctest: +SKIP
>>> idx.add(["A cat sat.", "Stocks fell."], metadata=[{"topic": "pets"}, {"topic": "money"}])  # doctest: +SKIP
>>> idx.search("kitten", top_k=1, where={"topic": "pets"})[0].id   # doctest: +SKIP
'0'
>>> Index.open("my-index", enc).info()["count"]                  # doctest: +SKIP
2
"""
from __future__ import annotations

import fcntl
import functools
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from ..encoder import encode_as
from ..vectors import as_matrix, pairwise_scores, resolve_similarity
from . import ann
from .exact import Block, topk_blocks
from .documents import check_documents
from .prefilter import Shadow, read_shadow, write_shadow
from .store import Catalog, Segment, Snapshot, fsync_dir, open_segment, read_rows, write_atomic

FORMAT = "sentembed-index"
VERSION = 1
PROBE = "sentembed index fingerprint: the quick brown fox jumps over the lazy dog."


@dataclass(frozen=True)
class Hit:
    """One search result: document id, score under the index's similarity, text, metadata."""

    id: str
    score: float
    text: str | None
    metadata: Any = None


class Index:
    """A persistent collection; create with `Index.create`, reopen with `Index.open`."""

    def __init__(self, path: Path, manifest: dict, enc: Any = None) -> None:
        self.path = path
        self.manifest = manifest
        self.dimension: int = manifest["dimension"]
        self.similarity: str = manifest["similarity"]
        self.kind: str = manifest["kind"]
        self.params = ann.AnnParams.from_dict(manifest.get("params"))
        self._enc = enc
        self._lock = threading.RLock()
        self._catalog = Catalog(path / "catalog.sqlite")
        self._snapshot: Snapshot | None = None
        self._maps: dict[str, np.ndarray] = {}
        self._shadows: dict[str, Shadow | None] = {}
        self._ann: tuple[str, Any] | None = None

    # ----------------------------------------------------------------- create / open
    @classmethod
    def create(cls, path: str | os.PathLike, enc: Any, kind: str = "exact", **params: Any) -> "Index":
        """Make a new index at `path` (absent or an empty directory) for encoder `enc`.

        `kind`: "exact" (default), "hnsw" or "ivfpq"; `params` tune them (see `ann.AnnParams`).
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} already exists and is not an empty directory; use Index.open({str(path)!r})")
        similarity = resolve_similarity(enc)
        ann.check_kind(kind, similarity)
        p = ann.AnnParams.from_dict(params)
        probe = encode_as(enc, [PROBE], "document")[0]
        manifest = {
            "format": FORMAT, "version": VERSION,
            "model": str(getattr(enc, "name", "unknown")),
            "dimension": int(enc.dimension), "normalizes": bool(getattr(enc, "normalizes", False)),
            "similarity": similarity, "kind": kind, "params": p.to_dict(),
            "fingerprint": [round(float(v), 6) for v in probe],
        }
        if len(probe) != manifest["dimension"]:
            raise ValueError(f"encoder returns {len(probe)} dimensions but says dimension={enc.dimension}")
        (path / "vectors").mkdir(parents=True, exist_ok=True)
        Catalog(path / "catalog.sqlite", create=True).close()
        # The manifest goes last: a directory without it is not an index yet.
        write_atomic(path / "manifest.json", json.dumps(manifest, indent=1).encode())
        return cls(path, manifest, enc)

    @classmethod
    def open(cls, path: str | os.PathLike, enc: Any = None) -> "Index":
        """Reopen an index. With `enc`, check it is the model the index was built with.

        Without `enc`, vector queries work at once and the manifest's model is loaded on the
        first text query or add.
        """
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.is_file():
            raise FileNotFoundError(f"no index at {path} (no manifest.json); create one with Index.create")
        manifest = json.loads(mpath.read_text())
        if manifest.get("format") != FORMAT:
            raise ValueError(f"{mpath} is not a sentembed index manifest")
        if manifest.get("version", 0) > VERSION:
            raise ValueError(f"index format version {manifest['version']} is newer than this sentembed ({VERSION})")
        index = cls(path, manifest, None)
        if enc is not None:
            index._check_encoder(enc)
            index._enc = enc
        return index

    def _check_encoder(self, enc: Any) -> None:
        m = self.manifest
        name = getattr(enc, "name", "unknown")
        problems = []
        if int(enc.dimension) != m["dimension"]:
            problems.append(f"dimension {enc.dimension} != {m['dimension']}")
        if resolve_similarity(enc) != m["similarity"]:
            problems.append(f"similarity {resolve_similarity(enc)} != {m['similarity']}")
        if not problems:
            # Names can differ for one model (a name or a path); its embeddings cannot.
            probe = encode_as(enc, [PROBE], "document")[0].astype(np.float64)
            ref = np.asarray(m["fingerprint"], dtype=np.float64)
            cos = float(probe @ ref / max(np.linalg.norm(probe) * np.linalg.norm(ref), 1e-12))
            scale = float(np.linalg.norm(probe) / max(np.linalg.norm(ref), 1e-12))
            if cos < 0.9999 or abs(scale - 1) > 1e-3:
                problems.append(f"its embeddings differ (fingerprint cosine {cos:.4f})")
        if problems:
            raise ValueError(
                f"index {self.path} was built with model {m['model']!r}; the given model {name!r} is different: "
                + "; ".join(problems) + ". Open it with the same model, or build a new index."
            )

    @property
    def encoder(self) -> Any:
        if self._enc is None:
            import sentembed

            enc = sentembed.load(self.manifest["model"])
            self._check_encoder(enc)
            self._enc = enc
        return self._enc

    def close(self) -> None:
        with self._lock:
            self._catalog.close()
            self._maps.clear()
            self._shadows.clear()
            self._ann = None

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- reading
    def _snap(self) -> Snapshot:
        self._snapshot = self._catalog.snapshot(self._snapshot)
        return self._snapshot

    def _segment(self, seg: Segment) -> np.ndarray:
        m = self._maps.get(seg.file)
        if m is None:
            m = self._maps[seg.file] = open_segment(self.path, seg, self.dimension)
        return m

    def _shadow(self, seg: Segment) -> Shadow | None:
        if seg.file not in self._shadows:
            self._shadows[seg.file] = read_shadow(self.path / _shadow_file(seg.file), seg.n_rows, self.dimension)
        return self._shadows[seg.file]

    def _blocks(self, snap: Snapshot) -> list[Block]:
        return [Block(s.first_row, self._segment(s), self._shadow(s),
                      take=functools.partial(read_rows, self.path / s.file, self.dimension))
                for s in snap.segments]

    def _gather(self, snap: Snapshot, rows: np.ndarray) -> np.ndarray:
        """Vectors of global `rows`, wherever their segments are."""
        firsts = np.array([s.first_row for s in snap.segments], dtype=np.int64)
        out = np.empty((len(rows), self.dimension), dtype=np.float32)
        which = np.searchsorted(firsts, rows, side="right") - 1
        for k in np.unique(which):
            sel = which == k
            seg = snap.segments[k]
            out[sel] = read_rows(self.path / seg.file, self.dimension, rows[sel] - seg.first_row)
        return out

    def _ann_index(self, snap: Snapshot) -> Any:
        name = snap.state.get("ann_file")
        if not name:
            return None
        if self._ann is None or self._ann[0] != name:
            self._ann = (name, ann.load(self.path / name))
        return self._ann[1]

    def __len__(self) -> int:
        with self._lock:
            return self._snap().n_alive

    def existing(self, ids: Sequence[str]) -> list[str]:
        """Which of `ids` are in the index (e.g. to resume an interrupted bulk load)."""
        with self._lock:
            return self._catalog.existing_ids([str(i) for i in ids])

    def info(self) -> dict[str, Any]:
        """Model, dimension, similarity, kind, counts and size on disk."""
        with self._lock:
            snap = self._snap()
            size = sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())
            return {
                "path": str(self.path), "model": self.manifest["model"], "dimension": self.dimension,
                "similarity": self.similarity, "normalizes": self.manifest["normalizes"], "kind": self.kind,
                "count": snap.n_alive, "deleted": int(snap.deleted.sum()), "rows": snap.n_rows,
                "segments": len(snap.segments), "ann_rows": int(snap.state.get("ann_rows", 0)),
                "bytes": size, "params": self.params.to_dict(),
            }

    def _query_vectors(self, queries: Sequence[Any] | np.ndarray) -> np.ndarray:
        if len(queries) and all(isinstance(q, str) for q in queries):
            vecs = encode_as(self.encoder, queries, "query")
        elif any(isinstance(q, str) for q in queries):
            raise TypeError("queries must be all texts or all vectors")
        else:
            vecs = queries
        q = as_matrix(vecs, "query", dim=self.dimension).numpy()
        return self._stored_form(q)

    def _stored_form(self, v: np.ndarray) -> np.ndarray:
        # Cosine indexes keep unit vectors, so every later search is a plain inner product.
        if self.similarity == "cosine":
            v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
        return np.ascontiguousarray(v, dtype=np.float32)

    def search(self, query: str | Sequence[float] | np.ndarray, top_k: int = 10,
               where: dict[str, Any] | None = None) -> list[Hit]:
        """The `top_k` best documents for one text or vector, best first.

        `where` filters on metadata: {"lang": "en", "year": {"$gte": 2020}} (operators $eq $ne
        $gt $gte $lt $lte $in $nin $exists). Filtered searches are always exact.
        """
        if isinstance(query, str):
            return self.search_many([query], top_k, where)[0]
        arr = np.asarray(query, dtype=np.float32)
        if arr.ndim != 1:
            raise ValueError(f"search takes one text or one vector; use search_many for {arr.ndim}-D input")
        return self.search_many(arr[None, :], top_k, where)[0]

    def search_many(self, queries: Sequence[str] | np.ndarray, top_k: int = 10,
                    where: dict[str, Any] | None = None) -> list[list[Hit]]:
        """`search` for several queries (texts or a matrix) at once."""
        if int(top_k) != top_k or top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        q = self._query_vectors(queries)
        with self._lock:
            snap = self._snap()
            if snap.n_alive == 0:
                return [[] for _ in range(len(q))]
            sim = "dot" if self.similarity == "cosine" else self.similarity
            exclude = snap.deleted if snap.deleted.any() else None
            index = self._ann_index(snap)
            if where is not None:
                exclude = np.ones(snap.n_rows, dtype=bool)
                exclude[self._catalog.rows_where(where)] = False
                index = None
            if index is not None and int(snap.state.get("ann_rows", 0)) == snap.n_rows:
                scores, rows = self._search_ann(index, snap, q, int(top_k), sim)
            else:
                res = topk_blocks(torch.from_numpy(q), self._blocks(snap), int(top_k), sim, snap.n_rows, exclude)
                scores, rows = res.scores, res.indices
            docs = self._catalog.fetch(np.unique(rows[rows >= 0]))
        out = []
        for srow, rrow in zip(scores, rows):
            out.append([Hit(docs[r][0], float(s), docs[r][1], docs[r][2])
                        for s, r in zip(srow, rrow) if r >= 0 and np.isfinite(s) and r in docs])
        return out

    def _search_ann(self, index: Any, snap: Snapshot, q: np.ndarray, k: int, sim: str) -> tuple[np.ndarray, np.ndarray]:
        fetch = k * self.params.refine if self.kind == "ivfpq" else k
        _, rows = ann.search(index, self.kind, q, min(fetch, snap.n_rows), self.params, snap.deleted)
        # Re-score the candidates exactly: the score is then the model's similarity, whatever
        # the structure approximated (PQ codes, squared L2).
        scores = np.full(rows.shape, -np.inf, dtype=np.float32)
        for i in range(len(q)):
            valid = rows[i] >= 0
            if valid.any():
                vecs = self._gather(snap, rows[i][valid])
                scores[i, valid] = pairwise_scores(q[i : i + 1], vecs, sim)[0]
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        rows = np.take_along_axis(rows, order, 1)
        scores = np.take_along_axis(scores, order, 1)
        rows[~np.isfinite(scores)] = -1
        return scores, rows

    # ----------------------------------------------------------------- writing
    @contextmanager
    def _writer(self) -> Iterator[None]:
        """One writer at a time, across processes; readers never wait for it."""
        with open(self.path / "write.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                with self._lock:
                    self._cleanup()
                    yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _cleanup(self) -> None:
        """Remove files a killed writer left behind: whatever no commit names."""
        snap = self._snap()
        named = {s.file for s in snap.segments} | {_shadow_file(s.file) for s in snap.segments}
        named.add(snap.state.get("ann_file", ""))
        for f in list((self.path / "vectors").iterdir()) + list(self.path.glob("ann-*")):
            rel = str(f.relative_to(self.path))
            if rel not in named:
                f.unlink(missing_ok=True)

    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None,
            metadata: Sequence[dict | None] | None = None, vectors: np.ndarray | None = None,
            batch_size: int = 32) -> list[str]:
        """Embed and store `texts` (or store given `vectors`) in one atomic commit; returns the ids.

        Ids default to the row numbers as strings; an id already in the index is an error.
        `metadata` is one JSON-serialisable dict (or None) per text.
        """
        texts, ids, meta_json = check_documents(texts, ids, metadata)
        n = len(texts)
        if n == 0:
            return []
        if vectors is None:
            vectors = encode_as(self.encoder, texts, "document")
        vecs = as_matrix(vectors, "vectors", dim=self.dimension).numpy()
        if len(vecs) != n:
            raise ValueError(f"{len(vecs)} vectors for {n} texts")
        vecs = self._stored_form(vecs)
        with self._writer():
            snap = self._snap()
            first = snap.n_rows
            if ids is None:
                ids = [str(first + i) for i in range(n)]
            taken = self._catalog.existing_ids(list(ids))
            if taken:
                raise ValueError(f"ids already in the index: {taken[:5]}{'...' if len(taken) > 5 else ''}; delete them first")
            seg_no = max((s.seg for s in snap.segments), default=0) + 1
            seg = Segment(seg_no, f"vectors/seg-{seg_no:06d}.f32", first, n)
            # 1) the vectors, durable before any commit names them
            seg_path = self.path / seg.file
            with open(seg_path, "wb") as f:
                f.write(vecs.tobytes())
                f.flush()
                os.fsync(f.fileno())
            self._write_shadow(seg.file, [vecs])
            fsync_dir(seg_path.parent)
            # 2) the ANN structure for the new state, in a new file
            state = self._write_ann(snap, vecs, seg_no)
            # 3) one transaction makes it all visible
            self._catalog.commit_add(seg, list(ids), texts, meta_json, state)
            old = snap.state.get("ann_file")
            if old and state.get("ann_file") != old:
                (self.path / old).unlink(missing_ok=True)
            self._snap()
        return list(ids)

    def _write_shadow(self, seg_file: str, matrices: list[np.ndarray]) -> None:
        """The bf16 copy that makes exact inner-product search twice as fast (see prefilter.py)."""
        if self.similarity in ("cosine", "dot"):
            write_shadow(self.path / _shadow_file(seg_file), matrices)

    def _write_ann(self, snap: Snapshot, vecs: np.ndarray, seg_no: int) -> dict[str, str]:
        """Write the ANN structure of the state after this add to a new file; returns its state keys."""
        index = ann.updated(self.kind, self._ann_index(snap), vecs, snap.n_rows, self.dimension, self.similarity,
                            self.params, lambda: self._gather(snap, np.arange(snap.n_rows)))
        if index is None:
            return {}
        name = f"ann-{seg_no:06d}.faiss"
        ann.save(index, self.path / name)
        fsync_dir(self.path)
        return {"ann_file": name, "ann_rows": str(snap.n_rows + len(vecs))}

    def compact(self) -> int:
        """Merge all vector segments into one file (each add writes one); returns segments merged.

        Row numbers stay the same, so the ANN structure stays valid; readers holding the old
        files keep reading them until they next look at the catalog.
        """
        with self._writer():
            snap = self._snap()
            if len(snap.segments) < 2:
                return len(snap.segments)
            seg_no = max(s.seg for s in snap.segments) + 1
            merged = Segment(seg_no, f"vectors/seg-{seg_no:06d}.f32", 0, snap.n_rows)
            with open(self.path / merged.file, "wb") as f:
                for s in snap.segments:
                    f.write(np.ascontiguousarray(self._segment(s)).tobytes())
                f.flush()
                os.fsync(f.fileno())
            self._write_shadow(merged.file, [self._segment(s) for s in snap.segments])
            fsync_dir(self.path / "vectors")
            self._catalog.commit_segments(snap.segments, merged)
            for s in snap.segments:
                (self.path / s.file).unlink(missing_ok=True)
                (self.path / _shadow_file(s.file)).unlink(missing_ok=True)
                self._maps.pop(s.file, None)
                self._shadows.pop(s.file, None)
            self._snap()
            return len(snap.segments)

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id in one commit; unknown ids are an error and delete nothing."""
        ids = [str(i) for i in ids]
        if not ids:
            return 0
        with self._writer():
            missing = self._catalog.commit_delete(list(dict.fromkeys(ids)))
            if missing:
                raise KeyError(f"ids not in the index: {missing[:5]}{'...' if len(missing) > 5 else ''}; nothing was deleted")
            self._snap()
        return len(set(ids))


def _shadow_file(seg_file: str) -> str:
    return seg_file.rsplit(".", 1)[0] + ".bf16"
