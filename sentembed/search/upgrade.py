"""Bringing an index made before passages and lexical search up to date, in one commit.

Such an index stored one vector row per document and nothing else about its text. The
upgrade adds the passages table (each document one passage: its whole text) and the FTS5
lexical table over those texts, in a single SQLite transaction: a process killed half-way
leaves the index exactly as it was, and readers keep working throughout.

    sentembed index upgrade my-index
"""
from __future__ import annotations

from . import lexical
from .store import BUMP_GENERATION, PASSAGES_SCHEMA, Catalog

BATCH = 2000


def upgrade_catalog(catalog: Catalog, show_progress: bool | None = None) -> bool:
    """Add whatever of passages and lexical `catalog` lacks; False when it had both."""
    from tqdm import tqdm

    if catalog.passages and catalog.lexical:
        return False
    db = catalog.db
    cur = db.cursor()
    cur.execute("BEGIN IMMEDIATE")
    try:
        total = cur.execute("SELECT COUNT(*) FROM docs").fetchone()[0]
        fill_passages = not catalog.passages
        if fill_passages:
            for statement in PASSAGES_SCHEMA.split(";"):
                if statement.strip():
                    cur.execute(statement)
        cur.execute(lexical.SCHEMA)
        last = -1
        with tqdm(total=total, desc="upgrade", unit="doc", disable=show_progress is False or
                  (show_progress is None and total < 10_000)) as bar:
            while True:
                batch = cur.execute("SELECT row, text, deleted FROM docs WHERE row > ? ORDER BY row LIMIT ?",
                                    (last, BATCH)).fetchall()
                if not batch:
                    break
                if fill_passages:
                    cur.executemany("INSERT INTO passages(row, doc, start, stop) VALUES (?, ?, 0, ?)",
                                    ((r, r, len(t or "")) for r, t, _ in batch))
                live = [(r, t or "") for r, t, dead in batch if not dead]
                lexical.insert(cur, [r for r, _ in live], [t for _, t in live])
                last = batch[-1][0]
                bar.update(len(batch))
        if fill_passages:
            alive = cur.execute("SELECT COUNT(*) FROM docs WHERE deleted = 0").fetchone()[0]
            cur.execute("INSERT OR REPLACE INTO state(key, value) VALUES ('documents', ?)", (str(alive),))
        cur.execute(BUMP_GENERATION)
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    catalog._tables()
    return True
