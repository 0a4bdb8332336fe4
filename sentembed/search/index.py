"""`Index`: a persistent, searchable collection of embedded texts in a directory.

Exact search (the default) scans the memory-mapped vectors with the chunked top-k of
`exact.py`; kind="hnsw" or "ivfpq" adds a FAISS structure for large collections. Texts, ids
and JSON metadata live in SQLite, with an FTS5 table (BM25) over the same passages for lexical
and hybrid search (lexical.py, fusion.py). Documents longer than the model's window are cut
into passages (chunking.py); a document ranks by its best passage, which each hit carries.
See `store.py` for why a killed writer cannot damage it.

>>> idx = Index.create("my-index", enc)                       # doctest: +SKIP
>>> idx.add(["A cat sat.", "Stocks fell."], metadata=[{"topic": "pets"}, {"topic": "money"}])  # doctest: +SKIP
>>> idx.search("kitten", top_k=1, where={"topic": "pets"})[0].id   # doctest: +SKIP
'0'
>>> Index.open("my-index", enc).info()["count"]                  # doctest: +SKIP
2
>>> hit = idx.search("falling stock prices", mode="hybrid")[0]   # doctest: +SKIP
>>> hit.passage == hit.text[hit.span[0]:hit.span[1]]             # doctest: +SKIP
True
"""
from __future__ import annotations

import fcntl
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..encoder import encode_as
from ..vectors import as_matrix, resolve_similarity
from . import ann, fusion
from .chunking import Chunker, chunker_for
from . import compaction, integrity
from .compaction import next_segment, write_segment
from .documents import check_documents, check_vectors, stored_blocks, stored_form
from .lexical import match_expression
from .manifest import VERSION, check_encoder, new_manifest, read_manifest, write_manifest
from .rerank import rerank_depth, rerank_hits
from .searching import Hit, rank
from .store import Catalog, Snapshot, disk_size, open_segment
from .view import OpenFiles, View, segment_files

# The mode of a search that names none, where the index has a lexical table (else "dense").
# Dense until the SciFact measurement of benchmarks/retrieval.py decides otherwise.
DEFAULT_MODE = "dense"
READ_ATTEMPTS = 20  # fresh snapshots a reader takes when compactions keep removing the files it opens


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
        self._files = OpenFiles(path, self.dimension)
        self._chunker: Chunker | None = None

    # ----------------------------------------------------------------- create / open
    @classmethod
    def create(cls, path: str | os.PathLike, enc: Any, kind: str = "exact", chunk_tokens: int | str | None = "auto",
               chunk_overlap: int | None = None, **params: Any) -> "Index":
        """Make a new index at `path` (absent or an empty directory) for encoder `enc`.

        `kind`: "exact" (default), "hnsw" or "ivfpq"; `params` tune them (see `ann.AnnParams`).
        `chunk_tokens`: "auto" cuts documents longer than the model's window into windows that
        fit it (for a model without max_seq_length: no chunking); an int sets the window; None
        keeps whole texts (truncated by the model). `chunk_overlap` defaults to a sixth.
        """
        path = Path(path)
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            raise FileExistsError(f"{path} already exists and is not an empty directory; use Index.open({str(path)!r})")
        ann.check_kind(kind, resolve_similarity(enc))
        chunking = chunker_for(enc, chunk_tokens, chunk_overlap)
        manifest = new_manifest(enc, kind, ann.AnnParams.from_dict(params), chunking)
        (path / "vectors").mkdir(parents=True, exist_ok=True)
        Catalog(path / "catalog.sqlite", create=True).close()
        write_manifest(path, manifest)  # last: a directory without it is not an index yet
        index = cls(path, manifest, enc)
        index._chunker = chunking
        return index

    @classmethod
    def open(cls, path: str | os.PathLike, enc: Any = None) -> "Index":
        """Reopen an index. With `enc`, check it is the model the index was built with.

        Without `enc`, vector queries work at once and the manifest's model is loaded on the
        first text query or add.
        """
        path = Path(path)
        manifest = read_manifest(path)
        index = cls(path, manifest, None)
        if enc is not None:
            index._check_encoder(enc)
            index._enc = enc
        return index

    def _check_encoder(self, enc: Any) -> None:
        check_encoder(self.manifest, enc, self.path)

    @property
    def encoder(self) -> Any:
        if self._enc is None:
            import sentembed

            enc = sentembed.load(self.manifest["model"])
            self._check_encoder(enc)
            self._enc = enc
        return self._enc

    @property
    def chunker(self) -> Chunker | None:
        """How documents are cut into passages (None: whole texts)."""
        conf = self.manifest.get("chunking")
        if conf and self._chunker is None:
            self._chunker = Chunker.for_encoder(self.encoder, conf["tokens"], conf["overlap"])
        return self._chunker

    def chunk(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """The passages `add` would store for each text, as (start, end) spans: to embed them
        elsewhere (a server's queue) and hand the vectors to `add`, one per passage, in order."""
        texts = list(texts)
        if self.chunker is None:
            return [[(0, len(t))] for t in texts]
        return self.chunker.split(texts)

    @property
    def lexical(self) -> bool:
        """Whether the index has its lexical table (indexes made before it get one from `upgrade`)."""
        return self._catalog.lexical

    def upgrade(self, show_progress: bool | None = None) -> bool:
        """Give an index made before passages and lexical search both, in one atomic commit.

        Returns False when there was nothing to do. Readers may go on meanwhile.
        """
        from .upgrade import upgrade_catalog

        with self._writer():
            done = upgrade_catalog(self._catalog, show_progress)
            self._snapshot = None
            if self.manifest.get("version", 1) < VERSION:
                self.manifest = {**self.manifest, "version": VERSION, "chunking": None}
                write_manifest(self.path, self.manifest)
            return done

    def close(self) -> None:
        with self._lock:
            self._catalog.close()
            self._files.clear()

    def __enter__(self) -> "Index":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ----------------------------------------------------------------- reading
    def _snap(self) -> Snapshot:
        self._snapshot = self._catalog.snapshot(self._snapshot)
        return self._snapshot

    def _view(self, snap: Snapshot) -> View:
        return View(self._files, self._catalog, snap, self.similarity, self.kind, self.params)

    @contextmanager
    def _reading(self) -> Iterator[View]:
        """The latest committed state, its catalog read in one transaction and its files held
        open: whatever other processes commit or remove meanwhile, this view stays whole."""
        with self._lock:
            for _ in range(READ_ATTEMPTS):
                with self._catalog.read():
                    snap = self._snap()
                    try:
                        view = self._view(snap)
                    except FileNotFoundError:
                        continue  # removed by a later commit: read that one
                    yield view
                    return
            raise RuntimeError(f"the index at {self.path} changed {READ_ATTEMPTS} times while opening its files; try again")

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
            size = disk_size(self.path)
            return {
                "path": str(self.path), "model": self.manifest["model"], "dimension": self.dimension,
                "similarity": self.similarity, "normalizes": self.manifest["normalizes"], "kind": self.kind,
                "count": snap.n_alive, "deleted": int(snap.deleted.sum()), "rows": snap.n_rows,
                "segments": len(snap.segments), "ann_rows": int(snap.state.get("ann_rows", 0)),
                "bytes": size, "params": self.params.to_dict(),
            }

    def verify(self) -> list[str]:
        """Check every vector file of the committed state against the checksum its commit
        recorded; returns the problems, each naming its file (empty: intact)."""
        with self._lock, self._catalog.read():
            return integrity.verify(self.path, self._snap(), self.dimension, self._shadowed)

    def _stored_form(self, v: np.ndarray) -> np.ndarray:
        return stored_form(v, self.similarity)

    def search(self, query: str | Sequence[float] | np.ndarray, top_k: int = 10, where: dict[str, Any] | None = None,
               mode: str | None = None, alpha: float | None = None, rerank: Any = None,
               rerank_top_k: int | None = None, rerank_label: str | int | None = None,
               rerank_alpha: float | None = None) -> list[Hit]:
        """The `top_k` best documents for one text or vector, best first; a document ranks by
        its best passage, and its hit carries that passage.

        `mode`: "dense" (the vectors), "lexical" (BM25 over the passages) or "hybrid" (both lists fused
        by reciprocal rank, or, with `alpha` in [0, 1], by their min-max normalised scores weighted
        alpha : 1 - alpha). None: DEFAULT_MODE for a text where the index has a lexical table, else
        "dense". A query without any word falls back to dense. `where` filters on metadata before
        ranking, on both lists: {"lang": "en", "year": {"$gte": 2020}} (operators $eq $ne $gt $gte $lt
        $lte $in $nin $exists). Filtered dense searches are always exact. `rerank`, a cross-encoder,
        reorders the best `rerank_top_k` (default max(top_k, 100)) by its score of (query, matched
        passage), then the hits' score; `rerank_label` picks a multi-label model's column;
        `rerank_alpha` in [0, 1] orders by that weight of its score blended with the search's (rerank.py).
        """
        if not isinstance(query, str) and np.ndim(query) != 1:
            raise ValueError(f"search takes one text or one vector; use search_many for {np.ndim(query)}-D input")
        many = [query] if isinstance(query, str) else np.asarray(query, dtype=np.float32)[None, :]
        return self.search_many(many, top_k, where, mode, alpha, None, rerank, rerank_top_k, rerank_label,
                                rerank_alpha)[0]

    def search_many(self, queries: Sequence[str] | np.ndarray, top_k: int = 10, where: dict[str, Any] | None = None,
                    mode: str | None = None, alpha: float | None = None, query_vectors: np.ndarray | None = None,
                    rerank: Any = None, rerank_top_k: int | None = None,
                    rerank_label: str | int | None = None, rerank_alpha: float | None = None) -> list[list[Hit]]:
        """`search` for several queries (texts or a matrix); `query_vectors`: the texts' embeddings if made elsewhere."""
        if int(top_k) != top_k or top_k <= 0:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
        texts = list(queries) if len(queries) and all(isinstance(q, str) for q in queries) else None
        depth = rerank_depth(rerank, queries, top_k, rerank_top_k, rerank_label, rerank_alpha)  # top_k without rerank
        mode = mode or (DEFAULT_MODE if texts is not None and self.lexical else "dense")
        fusion.check_mode(mode, alpha)
        if mode != "dense" and texts is None:
            raise ValueError(f"mode={mode!r} needs query texts; a vector can only be searched with mode='dense'")
        if mode != "dense" and not self.lexical:
            self._catalog.search_lexical("", 1, None)  # raises: how to build the table
        expressions = [match_expression(t) for t in texts] if mode != "dense" else [None] * len(queries)
        dense_for = [i for i, e in enumerate(expressions) if mode != "lexical" or e is None]
        q = self._dense_queries(queries, dense_for, query_vectors)
        with self._reading() as view:
            found = rank(view, q, dense_for, expressions, mode, depth, where, alpha)
        return found if rerank is None else rerank_hits(rerank, queries, found, int(top_k), rerank_label, alpha=rerank_alpha)

    def _dense_queries(self, queries: Any, which: list[int], given: np.ndarray | None) -> np.ndarray:
        """The query vectors of queries `which`, embedded here unless `given`."""
        if given is not None:
            g = as_matrix(given, "query_vectors", dim=self.dimension).numpy()
            if len(g) != len(queries):
                raise ValueError(f"{len(g)} query vectors for {len(queries)} queries")
            return self._stored_form(g[which])
        texts = [isinstance(q, str) for q in queries]
        if any(texts) and not all(texts):
            raise TypeError("queries must be all texts or all vectors")
        if not which:
            return np.zeros((0, self.dimension), dtype=np.float32)
        vecs = encode_as(self.encoder, [queries[i] for i in which], "query") if any(texts) else np.asarray(queries)
        q = as_matrix(vecs, "query", dim=self.dimension).numpy()
        return self._stored_form(q if any(texts) else q[which])

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
        named = {name for s in snap.segments for name in segment_files(s.file)}
        named.add(snap.state.get("ann_file", ""))
        for f in list((self.path / "vectors").iterdir()) + list(self.path.glob("ann-*")):
            rel = str(f.relative_to(self.path))
            if rel not in named:
                f.unlink(missing_ok=True)

    def add(self, texts: Sequence[str], ids: Sequence[str] | None = None,
            metadata: Sequence[dict | None] | None = None, vectors: np.ndarray | None = None,
            batch_size: int = 32) -> list[str]:
        """Embed and store `texts` (or store given `vectors`) in one atomic commit; returns the ids.

        A text longer than the index's window is stored as several passages, each embedded.
        Given `vectors` are one per passage of `index.chunk(texts)`, in order; or one per text,
        and then each text is stored whole, as its vector was made; a memory map
        (`np.load("emb.npy", mmap_mode="r")`) larger than memory is read a block at a time.
        The passages enter the lexical table in the same commit.
        Ids default to numbers counting up (in a fresh index, the row numbers) as strings, past
        any numeric id already taken; an id already in the index is an error. `metadata` is one JSON-serialisable dict (or None) per text.
        """
        texts, ids, meta_json = check_documents(texts, ids, metadata)
        n = len(texts)
        if n == 0:
            return []
        spans = self.chunk(texts) if self._catalog.passages else None
        if spans and vectors is not None and len(vectors) == n:
            spans = [[(0, len(t))] for t in texts]  # the caller embedded whole texts
        passages = [t[a:b] for t, doc in zip(texts, spans) for a, b in doc] if spans else texts
        if vectors is None:
            vectors = encode_as(self.encoder, passages, "document")
        vectors = check_vectors(vectors, self.dimension)
        if len(vectors) != len(passages):
            cut = f" cut into {len(passages)} passages: give one vector per text or per passage of index.chunk(texts)"
            raise ValueError(f"{len(vectors)} vectors for {n} texts" + (cut if len(passages) != n else ""))
        with self._writer():
            snap = self._snap()
            first = snap.n_rows
            next_id = int(snap.state.get("next_id", first))
            if ids is None:
                ids, next_id = self._catalog.automatic_ids(next_id, [len(doc) for doc in spans] if spans else [1] * n)
            taken = self._catalog.existing_ids(list(ids))
            if taken:
                raise ValueError(f"ids already in the index: {taken[:5]}{'...' if len(taken) > 5 else ''}; delete them first")
            seg = next_segment(snap, first, len(vectors))
            # 1) the vectors, durable before any commit names them
            sums = write_segment(self.path, seg, stored_blocks(vectors, self.similarity), self._shadowed)
            # 2) the ANN structure for the new state, in a new file
            state = self._write_ann(snap, open_segment(self.path, seg, self.dimension), seg.seg)
            # 3) one transaction makes it all visible
            self._catalog.commit_add(seg, list(ids), texts, meta_json, {**state, **sums, "next_id": str(next_id)}, spans)
            old = snap.state.get("ann_file")
            if old and state.get("ann_file") != old:
                (self.path / old).unlink(missing_ok=True)
            self._compact(automatic=True)
        return list(ids)

    @property
    def _shadowed(self) -> bool:
        """Whether segments get a fast copy (int8, or bf16 where only that pays), which makes
        exact inner-product search two to four times as fast (compaction.copies_to_write)."""
        return self.similarity in ("cosine", "dot")

    def _write_ann(self, snap: Snapshot, vecs: np.ndarray, seg_no: int, rebuild: bool = False) -> dict[str, str]:
        """The ANN structure of the state after this add (or, with `rebuild`, of `vecs` alone),
        in a new file; returns its state keys."""
        return compaction.write_ann(self.path, self.kind, self.similarity, self.params, None if rebuild else self._view(snap),
                                    vecs, seg_no)

    def compact(self) -> int:
        """Rewrite the vectors as one segment holding only live rows, renumbered, with the
        lexical table and ANN structure rebuilt; returns the number of segments replaced.

        Adds merge small segments on their own (compaction.py); this also drops deleted rows,
        so that nothing of a deleted document stays under the index directory.
        """
        with self._writer():
            return self._compact(automatic=False)

    def _compact(self, automatic: bool) -> int:
        """Under the writer lock: on add (`automatic`) merge what the policy says, else all."""
        snap = self._snap()
        if snap.deleted.any() and (not automatic or compaction.rewrite_due(snap)):
            done = compaction.rewrite(self.path, self._files, self._catalog, snap, self._shadowed,
                                      lambda vecs, seg_no: self._write_ann(snap, vecs, seg_no, rebuild=True))
        else:
            count = compaction.merge_plan(snap.segments) if automatic else len(snap.segments)
            done = compaction.merge(self.path, self._files, self._catalog, snap, count, self._shadowed) if count else 0
        self._snap()
        return done

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id in one commit; unknown ids are an error and delete nothing."""
        ids = [str(i) for i in ids]
        if not ids:
            return 0
        with self._writer():
            missing = self._catalog.commit_delete(list(dict.fromkeys(ids)))
            if missing:
                raise KeyError(f"ids not in the index: {missing[:5]}{'...' if len(missing) > 5 else ''}; nothing was deleted")
            self._catalog.checkpoint()  # the texts leave the WAL now; their vectors at the next compact()
            self._snap()
        return len(set(ids))
