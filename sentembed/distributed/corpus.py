"""A corpus cut into blocks, and one Parquet shard written per block, exactly once.

The plan is deterministic: the input files, sorted, are cut into blocks of `rows_per_shard`
rows, and block k of file f is always shard `part-FFFFF-RRRRRRRRRRRR.parquet` (f and the
first row). A shard is written to a temporary name and renamed into place, so it is either
whole or absent; a block whose shard exists is done. A worker killed mid-block leaves at most
a temporary file; the retried block writes the same shard again. Every row is therefore in
exactly one shard, whatever is retried, and an interrupted job resumes where it stopped.

Inputs: Parquet files, or JSON lines (`.jsonl`, `.json`); a directory means every such file
in it (recursively). Shard columns: `id` (string), `embedding` (fixed-size list of float32),
and `text` when asked for (to build an index from the shards without the source files).
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..io import atomic_write, read_jsonl

SUFFIXES = {".parquet": "parquet", ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl"}
MANIFEST = "embed-corpus.json"


@dataclass(frozen=True)
class Block:
    """Rows [start, stop) of one input file; for JSON lines, also their byte range."""

    path: str
    format: str
    file_no: int
    start: int
    stop: int
    byte_start: int = 0
    byte_stop: int = 0
    first_line: int = 1  # the line number at byte_start, for error messages

    @property
    def name(self) -> str:
        """The shard's file name: a function of the plan alone, never of who runs it."""
        return f"part-{self.file_no:05d}-{self.start:012d}.parquet"

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Fields:
    """Which fields make the text and the id of a row."""

    text: tuple[str, ...] = ("text",)  # joined with a space, as MTEB joins title and text
    id: str | None = None  # None: "id", else "_id", else FILE_STEM-ROW

    def text_of(self, row: dict[str, Any], where: str) -> str:
        parts = [row.get(f) for f in self.text]
        if all(p is None for p in parts):
            raise ValueError(f"{where}: none of the text fields {list(self.text)} is present; pass --text-field")
        return " ".join(str(p) for p in parts if p is not None).strip()

    def id_of(self, row: dict[str, Any], stem: str, index: int) -> str:
        if self.id is not None:
            if row.get(self.id) is None:
                raise ValueError(f"{stem} row {index}: no id field {self.id!r}")
            return str(row[self.id])
        for name in ("id", "_id"):
            if row.get(name) is not None:
                return str(row[name])
        return f"{stem}-{index}"


def input_files(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """The Parquet and JSON-lines files named or found under the given paths, sorted."""
    files: list[Path] = []
    for given in inputs:
        p = Path(given)
        if p.is_dir():
            files.extend(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in SUFFIXES)
        elif p.is_file():
            if p.suffix.lower() not in SUFFIXES:
                raise ValueError(f"{p}: not a Parquet or JSON-lines file (expected one of {sorted(SUFFIXES)})")
            files.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or directory")
    files = sorted({f.resolve() for f in files})
    if not files:
        raise FileNotFoundError(f"no Parquet or JSON-lines files in {[str(i) for i in inputs]}")
    return files


def plan_blocks(files: Sequence[Path], rows_per_shard: int) -> list[Block]:
    """Cut every file into blocks of rows_per_shard rows (the last one shorter)."""
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    blocks: list[Block] = []
    for file_no, path in enumerate(files):
        fmt = SUFFIXES[path.suffix.lower()]
        if fmt == "parquet":
            import pyarrow.parquet as pq

            n = pq.ParquetFile(path).metadata.num_rows
            blocks += [Block(str(path), fmt, file_no, s, min(s + rows_per_shard, n)) for s in range(0, n, rows_per_shard)]
        else:
            blocks += _plan_jsonl(path, file_no, rows_per_shard)
    return blocks


def _plan_jsonl(path: Path, file_no: int, rows_per_shard: int) -> list[Block]:
    # One pass over the bytes: where every rows_per_shard-th non-blank line begins.
    blocks, row, offset, start_row, start_byte, start_line = [], 0, 0, 0, 0, 1
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            if line.strip():
                if row - start_row == rows_per_shard:
                    blocks.append(Block(str(path), "jsonl", file_no, start_row, row, start_byte, offset, start_line))
                    start_row, start_byte, start_line = row, offset, number
                row += 1
            offset += len(line)
    if row > start_row:
        blocks.append(Block(str(path), "jsonl", file_no, start_row, row, start_byte, offset, start_line))
    return blocks


def read_block(block: Block, fields: Fields) -> tuple[list[str], list[str]]:
    """The ids and texts of a block's rows, in file order."""
    stem = Path(block.path).stem
    if block.format == "parquet":
        rows = _parquet_rows(block, fields)
    else:  # errors="replace": a stray invalid byte should not lose the whole row
        rows = [row for _, row in read_jsonl(block.path, errors="replace", first_line=block.first_line,
                                             byte_range=(block.byte_start, block.byte_stop))]
    if len(rows) != block.rows:
        raise ValueError(f"{block.path}: expected {block.rows} rows from {block.start}, read {len(rows)}; "
                         "did the file change since the plan?")
    ids = [fields.id_of(r, stem, block.start + i) for i, r in enumerate(rows)]
    texts = [fields.text_of(r, f"{block.path} row {block.start + i}") for i, r in enumerate(rows)]
    return ids, texts


def _parquet_rows(block: Block, fields: Fields) -> list[dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(block.path)
    names = set(pf.schema_arrow.names)
    columns = [c for c in (*fields.text, fields.id or "", "id", "_id") if c in names]
    groups, first, seen = [], None, 0
    for g in range(pf.metadata.num_row_groups):  # only the row groups that hold the block
        n = pf.metadata.row_group(g).num_rows
        if seen + n > block.start and seen < block.stop:
            groups.append(g)
            first = seen if first is None else first
        seen += n
    table = pf.read_row_groups(groups, columns=sorted(set(columns))) if groups else pa.table({})
    return table.slice(block.start - (first or 0), block.rows).to_pylist()


def write_shard(outdir: Path, name: str, ids: list[str], vectors: np.ndarray, texts: list[str] | None = None,
                before_rename: Callable[[str, Path], None] | None = None) -> Path:
    """Write a shard under a temporary name, fsync it, and rename it into place."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    embedding = pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1])
    columns = {"id": pa.array(ids, pa.string()), "embedding": embedding}
    if texts is not None:
        columns["text"] = pa.array(texts, pa.string())
    final = outdir / name
    with atomic_write(final) as f:  # readers see no shard or the whole shard
        pq.write_table(pa.table(columns), f)
        if before_rename is not None:
            f.flush()
            before_rename(name, Path(f.name))
    return final


def embed_block(encoder: Any, block: Block, outdir: Path, fields: Fields, batch_size: int = 32,
                with_text: bool = False, before_rename: Callable[[str, Path], None] | None = None) -> int:
    """Embed one block and write its shard, unless a previous attempt already did; rows written."""
    if (outdir / block.name).exists():
        return 0
    ids, texts = read_block(block, fields)
    vectors = encoder.encode(texts, batch_size=batch_size, show_progress=False)
    write_shard(outdir, block.name, ids, np.asarray(vectors).reshape(len(texts), -1),
                texts if with_text else None, before_rename)
    return len(ids)


def check_manifest(outdir: Path, settings: dict[str, Any], overwrite: bool = False) -> None:
    """Refuse to mix shards of a different plan or model into one output folder."""
    path = outdir / MANIFEST
    if path.exists() and not overwrite:
        old = json.loads(path.read_text())
        if old != settings:
            diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(f"{outdir} holds shards of another run (differs in {diff}); "
                             "use another output folder or --overwrite")
    if overwrite:
        for f in outdir.glob("part-*.parquet"):
            f.unlink()
    with atomic_write(path, "w") as f:
        f.write(json.dumps(settings, indent=2, sort_keys=True))


def finish(outdir: Path, blocks: Iterable[Block]) -> dict[str, int]:
    """Check every planned shard is there with its rows; remove temporaries of dead attempts."""
    import pyarrow.parquet as pq

    blocks = list(blocks)
    missing = [b.name for b in blocks if not (outdir / b.name).exists()]
    if missing:
        raise RuntimeError(f"{len(missing)} shards were not written (first: {missing[:3]}); run again to resume")
    for b in blocks:
        n = pq.ParquetFile(outdir / b.name).metadata.num_rows
        if n != b.rows:
            raise RuntimeError(f"{b.name} has {n} rows, expected {b.rows}")
    for tmp in outdir.glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)
    return {"rows": sum(b.rows for b in blocks), "shards": len(blocks)}


def read_embeddings(outdir: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """Every id and vector of an output folder, in input order."""
    import pyarrow.parquet as pq

    ids: list[str] = []
    parts: list[np.ndarray] = []
    for shard in sorted(Path(outdir).glob("part-*.parquet")):
        table = pq.read_table(shard, columns=["id", "embedding"])
        ids += table.column("id").to_pylist()
        col = table.column("embedding").combine_chunks()
        parts.append(col.flatten().to_numpy(zero_copy_only=False).reshape(len(table), col.type.list_size))
    return ids, (np.concatenate(parts) if parts else np.zeros((0, 0), np.float32))

