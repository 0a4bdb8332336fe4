"""Hard-negative mining: for each (query, positive) pair, the corpus texts that rank high for
the query but are not judged relevant to it, as training rows for MNRL or a cross-encoder.

    rows = mine_hard_negatives(pairs, corpus=texts, encoder=enc, num_negatives=3,
                               range_min=10, range_max=50, relative_margin=0.05)
    for query, positive, negative in rows: ...          # output="triplets"

The controls are sentence-transformers' (`util.mine_hard_negatives`): a rank window
[range_min, range_max) over the corpus, ranked by the encoder's similarity to the query,
after the query's judged-relevant texts are removed (the row's positive and any other
positive listed for the same query text); `max_score`; `margin` (a negative scores at most
positive - margin) and `relative_margin` (at most positive × (1 - relative_margin)), which
skip likely false negatives; `sampling` "top" (the best that pass) or "random" (among them).

Memory is bounded, not proportional to the data: the pairs and the corpus texts sit in
temporary files (`RowStore`: 8 bytes a row in memory), the corpus vectors in a memory-mapped
temporary file (rows × dimension × 4 bytes on disk), and each text is known in memory only
by a 64-bit hash, kept with its sorted order for lookups: 40 bytes a pair and 32 a corpus row
in all. The working set is one chunk of `chunk_size` queries: their embeddings, candidate
lists of `range_max` rows, and the exact top-k scan (`sentembed.vectors.topk`: 256 queries ×
50,000 corpus rows of scores, and one 50,000-row block of corpus vectors, about 300 MB at
dimension 768). So for 1M pairs and a 1M corpus: about 70 MB of hashes and offsets plus that
working set (`benchmarks/mining_memory.py` measures it; the README has the figure).

Training never imports search (docs/ARCHITECTURE.md). `index=` takes any object with
`search_many(queries, top_k, mode=, query_vectors=)` returning hits with `text`, `passage`
and `score` — a `sentembed.search.Index`, opened by the command line, which joins the uses.
Hybrid candidates need an index's lexical table; their margins are judged on the encoder's
dense similarity (the passages are embedded), never on the fused score.
"""
from __future__ import annotations

import hashlib
import random
from array import array
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..encoder import encode_as
from ..vectors import paired_scores, resolve_similarity, topk
from .rowstore import RowStore

OUTPUTS = ("triplets", "n-tuple", "labeled-pairs")
SAMPLINGS = ("top", "random")
MODES = ("dense", "hybrid")


def text_hash(text: str) -> int:
    """A 64-bit hash of a text (blake2b): texts are compared by it, never kept in memory."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")


def _check(num_negatives: int, range_min: int, range_max: int | None, sampling: str, mode: str, output: str,
           corpus: Any, index: Any, margin: float | None, relative_margin: float | None) -> int:
    if corpus is not None and index is not None:
        raise ValueError("give corpus= or index=, not both")
    if not isinstance(num_negatives, int) or num_negatives < 1:
        raise ValueError(f"num_negatives must be a positive integer, got {num_negatives!r}")
    if range_min < 0:
        raise ValueError(f"range_min must be >= 0, got {range_min}")
    range_max = range_min + max(10 * num_negatives, 50) if range_max is None else range_max
    if range_max <= range_min:
        raise ValueError(f"range_max ({range_max}) must be greater than range_min ({range_min})")
    for name, value, choices in (("sampling", sampling, SAMPLINGS), ("mode", mode, MODES), ("output", output, OUTPUTS)):
        if value not in choices:
            raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(choices)}")
    if mode == "hybrid" and index is None:
        raise ValueError("mode='hybrid' ranks with an index's lexical table: pass index= "
                         "(`sentembed mine-negatives --index DIR`); a plain corpus is ranked dense")
    if margin is not None and margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    if relative_margin is not None and not 0 <= relative_margin < 1:
        raise ValueError(f"relative_margin must lie in [0, 1), got {relative_margin}")
    return range_max


def _pairs_store(pairs: Iterable[Sequence[str]], spill_dir: str | None) -> tuple[RowStore, np.ndarray, np.ndarray]:
    """The pairs in a RowStore, with the hashes of their queries and positives."""
    store = RowStore(spill_dir)
    q_hash, p_hash = array("Q"), array("Q")   # 8 bytes a hash, not a Python int's 40
    for number, pair in enumerate(pairs):
        if isinstance(pair, str) or len(pair) < 2 or not all(isinstance(t, str) for t in pair[:2]):
            raise TypeError(f"pair {number} is not a (query, positive) pair of texts: {pair!r:.80}")
        store.append((pair[0], pair[1]))
        q_hash.append(text_hash(pair[0]))
        p_hash.append(text_hash(pair[1]))
    store.seal()
    if not len(store):
        raise ValueError("no pairs to mine negatives for")
    return store, np.frombuffer(q_hash, dtype=np.uint64), np.frombuffer(p_hash, dtype=np.uint64)


class _Corpus:
    """Corpus texts in a RowStore, their hashes, and their vectors in a memory-mapped file."""

    def __init__(self, texts: Iterable[str], encoder: Any, chunk_size: int, batch_size: int,
                 spill_dir: str | None, show_progress: bool | None):
        from tqdm.auto import tqdm

        self.store = RowStore(spill_dir)
        self._file = tempfile.NamedTemporaryFile(dir=spill_dir, prefix="sentembed-corpus-", suffix=".f32")
        hashes = array("Q")
        chunk: list[str] = []
        dim = 0
        with tqdm(desc="embed corpus", unit="text", disable=show_progress is False) as bar:
            for text in (*texts, None):
                if text is not None:
                    if not isinstance(text, str):
                        raise TypeError(f"corpus item {len(hashes) + len(chunk)} is {type(text).__name__}, not text")
                    chunk.append(text)
                if chunk and (text is None or len(chunk) >= chunk_size):
                    vectors = encode_as(encoder, chunk, "document", batch_size=batch_size)
                    dim = vectors.shape[1]
                    self._file.write(np.ascontiguousarray(vectors, dtype=np.float32).tobytes())
                    self.store.extend((t,) for t in chunk)
                    hashes.extend(text_hash(t) for t in chunk)
                    bar.update(len(chunk))
                    chunk = []
        self.store.seal()
        self._file.flush()
        if not hashes:
            raise ValueError("the corpus is empty")
        self.hashes = np.frombuffer(hashes, dtype=np.uint64)
        self._by_hash = np.argsort(self.hashes, kind="stable")
        self._sorted_hashes = self.hashes[self._by_hash]
        self.vectors = np.memmap(self._file.name, dtype=np.float32, mode="r", shape=(len(hashes), dim))

    def rows_of(self, hashes: np.ndarray) -> np.ndarray:
        """The corpus row of each text hash, -1 where the text is not in the corpus."""
        at = np.minimum(np.searchsorted(self._sorted_hashes, hashes), len(self.hashes) - 1)
        return np.where(self._sorted_hashes[at] == hashes, self._by_hash[at], -1)


def mine_hard_negatives(pairs: Iterable[Sequence[str]], corpus: Iterable[str] | None = None, index: Any = None,
                        encoder: Any = None, num_negatives: int = 3, range_min: int = 0, range_max: int | None = None,
                        max_score: float | None = None, margin: float | None = None,
                        relative_margin: float | None = None, sampling: str = "top", mode: str = "dense",
                        output: str = "triplets", chunk_size: int = 1024, batch_size: int = 32, seed: int = 42,
                        show_progress: bool | None = None, spill_dir: str | Path | None = None) -> Iterator[tuple]:
    """Yield training rows with mined negatives, streamed chunk by chunk (see the module doc).

    output "triplets": (query, positive, negative) per negative; "n-tuple": (query, positive,
    negative_1, ..., negative_n), only for pairs where all num_negatives were found;
    "labeled-pairs": (query, positive, 1.0) then (query, negative, 0.0) per negative.
    corpus None (and no index): the positives are the corpus. range_max None: range_min +
    max(10 × num_negatives, 50).

    >>> rows = list(mine_hard_negatives([("what is a hop?", "A flower used in beer.")],
    ...                                 corpus=docs, encoder=enc, num_negatives=1))   # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    range_max = _check(num_negatives, range_min, range_max, sampling, mode, output, corpus, index,
                       margin, relative_margin)
    encoder = encoder if encoder is not None else getattr(index, "encoder", None)
    if encoder is None:
        raise ValueError("mine_hard_negatives needs encoder= (or an index that has one)")
    similarity = resolve_similarity(getattr(encoder, "similarity_fn_name", "cosine"))
    spill = None if spill_dir is None else str(spill_dir)
    store, q_hash, p_hash = _pairs_store(pairs, spill)
    # every judged positive of a query text, found by binary search over the query hashes
    by_query = np.argsort(q_hash, kind="stable")
    sorted_q = q_hash[by_query]
    source = None
    if index is None:
        texts = corpus if corpus is not None else (row[0] for row in _unique_positives(store))
        source = _Corpus(texts, encoder, chunk_size, batch_size, spill, show_progress)
    rng = random.Random(seed)
    with tqdm(total=len(store), desc="mine negatives", unit="pair", disable=show_progress is False) as bar:
        for start in range(0, len(store), chunk_size):
            rows = store[start:start + chunk_size]
            queries, positives = [r[0] for r in rows], [r[1] for r in rows]
            q_vecs = encode_as(encoder, queries, "query", batch_size=batch_size)
            p_vecs = _positive_vectors(positives, p_hash[start:start + len(rows)], source, encoder, batch_size)
            pos_scores = np.asarray(paired_scores(q_vecs, p_vecs, similarity), dtype=np.float32)
            judged = [set(p_hash[by_query[np.searchsorted(sorted_q, h):np.searchsorted(sorted_q, h, "right")]].tolist())
                      for h in q_hash[start:start + len(rows)]]
            depth = range_max + max(len(j) for j in judged)
            if source is not None:
                candidates = _dense_candidates(source, q_vecs, depth, similarity)
            else:
                candidates = _index_candidates(index, encoder, queries, q_vecs, depth, mode, similarity, batch_size)
            for i, (query, positive) in enumerate(rows):
                window = _window(candidates[i], judged[i], range_min, range_max)
                limit = _limit(float(pos_scores[i]), max_score, margin, relative_margin)
                kept = [text for text, score in window if score <= limit]
                chosen = kept[:num_negatives] if sampling == "top" else rng.sample(kept, min(num_negatives, len(kept)))
                yield from _rows(query, positive, chosen, output, num_negatives)
            bar.update(len(rows))


def _positive_vectors(positives: list[str], hashes: np.ndarray, source: _Corpus | None, encoder: Any,
                      batch_size: int) -> np.ndarray:
    """The positives' vectors; a positive that is also a corpus text reuses its corpus vector
    (both are embedded as documents), so each distinct text is embedded once."""
    if source is None:
        return encode_as(encoder, positives, "document", batch_size=batch_size)
    rows = source.rows_of(hashes)
    out = source.vectors[np.maximum(rows, 0)]   # a copy; the rows not found are filled next
    missing = np.flatnonzero(rows < 0)
    if len(missing):
        out[missing] = encode_as(encoder, [positives[i] for i in missing], "document", batch_size=batch_size)
    return np.asarray(out)


def _unique_positives(store: RowStore) -> Iterator[tuple[str]]:
    seen: set[int] = set()   # 8-byte hashes of the distinct positives, while the corpus is built
    for _, positive in store:
        h = text_hash(positive)
        if h not in seen:
            seen.add(h)
            yield (positive,)


# A candidate: its text, the hashes that identify it (a hit's passage and its whole document)
# and its dense score.
Candidate = tuple[str, tuple[int, ...], float]


def _dense_candidates(source: _Corpus, q_vecs: np.ndarray, depth: int, similarity: str) -> list[list[Candidate]]:
    """Per query, the `depth` best corpus rows, best first."""
    scores, rows = topk(q_vecs, source.vectors, depth, similarity)
    return [[(source.store[int(r)][0], (int(source.hashes[r]),), float(s)) for s, r in zip(srow, rrow)]
            for srow, rrow in zip(scores, rows)]


def _index_candidates(index: Any, encoder: Any, queries: list[str], q_vecs: np.ndarray, depth: int, mode: str,
                      similarity: str, batch_size: int) -> list[list[Candidate]]:
    """Per query, the index's `depth` best passages, in the index's order. Dense hits carry
    the index's similarity; hybrid ones are embedded here. A hit is judged by its passage and
    by its whole text, so a document that holds a positive is never a negative."""
    hits = index.search_many(queries, top_k=depth, mode=mode, query_vectors=q_vecs)
    out = []
    for i, found in enumerate(hits):
        texts = [h.passage or h.text or "" for h in found]
        if mode == "dense":
            scores = [float(h.score) for h in found]
        else:
            d_vecs = encode_as(encoder, texts, "document", batch_size=batch_size) if texts else q_vecs[:0]
            scores = np.asarray(paired_scores(np.repeat(q_vecs[i:i + 1], len(texts), 0), d_vecs, similarity)).tolist()
        out.append([(t, tuple({text_hash(t), text_hash(h.text or t)}), s) for t, h, s in zip(texts, found, scores)])
    return out


def _window(candidates: list[Candidate], judged: set[int], range_min: int, range_max: int) -> list[tuple[str, float]]:
    """Ranks range_min..range_max - 1 of the candidates that are not judged relevant (nor a
    repeat of a text already ranked)."""
    seen: set[int] = set()
    ranked = []
    for text, hashes, score in candidates:
        if judged.intersection(hashes) or seen.intersection(hashes):
            continue
        seen.update(hashes)
        ranked.append((text, score))
    return ranked[range_min:range_max]


def _limit(positive: float, max_score: float | None, margin: float | None, relative_margin: float | None) -> float:
    """The highest score a negative may have."""
    limit = float("inf") if max_score is None else max_score
    if margin is not None:
        limit = min(limit, positive - margin)
    if relative_margin is not None:
        limit = min(limit, positive * (1 - relative_margin))
    return limit


def _rows(query: str, positive: str, negatives: list[str], output: str, num_negatives: int) -> Iterator[tuple]:
    if output == "triplets":
        yield from ((query, positive, n) for n in negatives)
    elif output == "n-tuple":
        if len(negatives) == num_negatives:
            yield (query, positive, *negatives)
    else:
        yield (query, positive, 1.0)
        yield from ((query, n, 0.0) for n in negatives)


def read_pairs(path: str | Path, columns: Sequence[str] | None = None) -> Iterator[tuple[str, str]]:
    """(query, positive) pairs streamed from a training file (JSONL, CSV/TSV, Parquet): the
    first two text columns, or the two named in `columns`."""
    from .data import DataError, _to_row, read_records

    for number, record in enumerate(read_records(path), 1):
        texts, _ = _to_row(record, columns, None, f"{path} row {number}")
        if len(texts) < 2:
            raise DataError(f"{path} row {number}: a pair needs two texts (query, positive), found {len(texts)}")
        yield texts[0], texts[1]


def output_keys(output: str, num_negatives: int) -> list[str]:
    """The JSON keys of each output row; train on them with `columns:` in that order."""
    if output == "triplets":
        return ["query", "positive", "negative"]
    if output == "n-tuple":
        return ["query", "positive", *(f"negative_{i}" for i in range(1, num_negatives + 1))]
    return ["query", "document", "label"]


def write_rows(rows: Iterable[tuple], path: str | Path, output: str, num_negatives: int) -> int:
    """Write mined rows as JSON lines (atomically: the file appears whole or not at all);
    returns how many were written."""
    import json

    from ..io import atomic_write

    keys, count = output_keys(output, num_negatives), 0
    with atomic_write(Path(path), "w") as out:
        for row in rows:
            out.write(json.dumps(dict(zip(keys, row)), ensure_ascii=False) + "\n")
            count += 1
    return count
