"""Readers for the benchmark formats: STS TSV, BEIR folders, triplet JSON lines.

Every parse error names the file and the 1-based line number.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..io import DataFormatError, read_jsonl, read_lines  # DataFormatError, read_jsonl: re-exported


def read_sts(path: str | Path) -> tuple[list[str], list[str], list[float]]:
    """STS Benchmark TSV (original release): fields 4, 5, 6 are score, sentence1, sentence2.

    No quoting: lines are split on tabs only (the csv module would eat quote characters).

    >>> s1, s2, gold = read_sts("../shared/data/stsb/sts-dev.csv")   # doctest: +SKIP
    """
    path = Path(path)
    a: list[str] = []
    b: list[str] = []
    scores: list[float] = []
    for no, line in read_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 7:
            raise DataFormatError(f"{path}:{no}: expected at least 7 tab-separated fields "
                                  f"(genre, file, year, id, score, sentence1, sentence2), got {len(parts)}")
        try:
            score = float(parts[4])
        except ValueError:
            raise DataFormatError(f"{path}:{no}: score field {parts[4]!r} is not a number") from None
        scores.append(score)
        a.append(parts[5])
        b.append(parts[6])
    if not scores:
        raise DataFormatError(f"{path}: no sentence pairs found")
    return a, b, scores


@dataclass
class BeirData:
    """A BEIR retrieval task: corpus id -> text, query id -> text, qrels qid -> {doc id: grade}."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    titles: dict[str, str] = field(default_factory=dict)


def beir_doc_text(doc: dict) -> str:
    """Document text as MTEB builds it: `(title + " " + text).strip()`."""
    return ((doc.get("title") or "") + " " + (doc.get("text") or "")).strip()


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """BEIR qrels TSV with header `query-id corpus-id score`."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for no, line in read_lines(path):
        if not line.strip():
            continue
        parts = line.split("\t")
        if no == 1 and parts[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(parts) < 3:
            raise DataFormatError(f"{path}:{no}: expected query-id, corpus-id, score separated by tabs")
        try:
            grade = int(float(parts[2]))
        except ValueError:
            raise DataFormatError(f"{path}:{no}: relevance {parts[2]!r} is not a number") from None
        qrels.setdefault(parts[0].strip(), {})[parts[1].strip()] = grade
    return qrels


def read_beir(folder: str | Path, split: str = "test") -> BeirData:
    """A BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv.

    Only queries judged in the split are kept, as BEIR and MTEB do.
    """
    folder = Path(folder)
    for name in ("corpus.jsonl", "queries.jsonl"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder / name} not found: a BEIR folder holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv")
    qpath = folder / "qrels" / f"{split}.tsv"
    if not qpath.is_file():
        have = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise FileNotFoundError(f"no qrels for split {split!r} at {qpath}; available splits: {have or 'none'}")
    qrels = read_qrels(qpath)
    if not qrels:
        raise DataFormatError(f"{qpath}: no judgements")
    corpus: dict[str, str] = {}
    titles: dict[str, str] = {}
    for no, doc in read_jsonl(folder / "corpus.jsonl"):
        if "_id" not in doc:
            raise DataFormatError(f"{folder / 'corpus.jsonl'}:{no}: document without '_id'")
        corpus[str(doc["_id"])] = beir_doc_text(doc)
        titles[str(doc["_id"])] = doc.get("title") or ""
    queries: dict[str, str] = {}
    for no, q in read_jsonl(folder / "queries.jsonl"):
        if "_id" not in q or "text" not in q:
            raise DataFormatError(f"{folder / 'queries.jsonl'}:{no}: query needs '_id' and 'text'")
        if str(q["_id"]) in qrels:
            queries[str(q["_id"])] = q["text"]
    missing = [qid for qid in qrels if qid not in queries]
    if missing:
        raise DataFormatError(f"{qpath}: {len(missing)} judged queries are not in queries.jsonl (e.g. {missing[0]!r})")
    return BeirData(corpus, queries, qrels, split, titles)


def read_triplets(path: str | Path) -> list[tuple[str, str, str]]:
    """Triplets from JSON lines: {"anchor", "positive", "negative"} objects, or
    ["anchor", "positive", "negative"] arrays.

    >>> read_triplets("triplets.jsonl")[0]                          # doctest: +SKIP
    ('a passage', 'its concept', 'another concept')
    """
    path = Path(path)
    out: list[tuple[str, str, str]] = []
    for no, obj in read_jsonl(path, errors="strict", objects=False):
        if isinstance(obj, dict):
            try:
                t = (obj["anchor"], obj["positive"], obj["negative"])
            except KeyError as e:
                raise DataFormatError(f"{path}:{no}: missing key {e.args[0]!r} (need anchor, positive, negative)") from None
        elif isinstance(obj, list) and len(obj) == 3:
            t = tuple(obj)
        else:
            raise DataFormatError(f"{path}:{no}: expected an object with anchor/positive/negative or a 3-item list")
        if not all(isinstance(x, str) for x in t):
            raise DataFormatError(f"{path}:{no}: anchor, positive and negative must be strings")
        out.append(t)  # type: ignore[arg-type]
    if not out:
        raise DataFormatError(f"{path}: no triplets found")
    return out
