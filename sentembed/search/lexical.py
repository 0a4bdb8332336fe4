"""Lexical search: an SQLite FTS5 table (BM25) over the passages, inside the index catalog.

The table lives in catalog.sqlite and its rows are written in the transaction that commits
the vectors, so text, vectors and the lexical index are always at the same committed state.
Its rowid is the passage's vector row.

Tokenizer 'porter unicode61 remove_diacritics 2', measured on SciFact (test, 300 queries,
the query's words OR-ed, BM25 ranking): nDCG@10 0.6824, Recall@100 0.9253; plain 'unicode61'
gives 0.6683 / 0.8859 (BEIR's published BM25: 0.665). BM25's k1 = 1.2 and b = 0.75 are FTS5's
own and fixed (its bm25() takes only column weights; there is one column).

A user's query is never FTS5 syntax: each word becomes a quoted string, and the strings are
OR-ed, so AND, NEAR, *, ^, :, quotes and parentheses are searched as words or ignored.

Words found in at least half of the passages are left out of the search first: FTS5's BM25
gives them an idf of 1e-6, so they add nothing to a passage's score, yet each makes nearly every
passage a hit whose score must be computed (on SciFact, a typical claim matched 6,858 of 6,897
passages through words such as "the" and "of"). When the other words find fewer than k
documents, the whole query runs, so a document that holds only common words still comes last.
Documents are grouped from the best passages first, all of them only when those hold fewer
than k documents.

>>> match_expression('say "NEAR(a b)" AND c*')
'"say" OR "near" OR "a" OR "b" OR "and" OR "c"'
>>> match_expression("?!") is None
True
"""
from __future__ import annotations

import math
import re
from typing import Any

TOKENIZE = "porter unicode61 remove_diacritics 2"
SCHEMA = f"CREATE VIRTUAL TABLE IF NOT EXISTS lexical USING fts5(text, tokenize='{TOKENIZE}')"
_WORDS = re.compile(r"\w+")


def match_expression(query: str) -> str | None:
    """The FTS5 query for a user's text: its distinct words, quoted and OR-ed; None without words."""
    words = list(dict.fromkeys(w.lower() for w in _WORDS.findall(query)))
    if not words:
        return None
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words)


def has_table(db: Any) -> bool:
    return db.execute("SELECT 1 FROM sqlite_master WHERE name = 'lexical'").fetchone() is not None


def insert(cur: Any, rows: list[int], texts: list[str]) -> None:
    """Index passages (inside the caller's transaction)."""
    cur.executemany("INSERT INTO lexical(rowid, text) VALUES (?, ?)", zip(rows, texts))


def delete_documents(cur: Any, doc_rows: list[int], chunked: bool) -> None:
    """Remove the passages of documents (inside the caller's transaction)."""
    sub = "SELECT row FROM passages WHERE doc = ?" if chunked else "SELECT ?"
    cur.executemany(f"DELETE FROM lexical WHERE rowid IN ({sub})", ((r,) for r in doc_rows))


def search(db: Any, expression: str, k: int, where: tuple[str, list[Any]] | None, chunked: bool,
           passages: int | None = None, documents: int | None = None) -> list[tuple[int, float]]:
    """The `k` best documents for an FTS5 expression: (best passage row, BM25 score), best first.

    The score is -bm25(), so larger is better, as for every other score of the index. A
    document's score is its best passage's; `where` (SQL over docs.metadata) is applied here,
    before any fusion. `passages` and `documents`, the live rows of the table and documents of
    the index, let words in half of the passages or more be left out first (see above) and
    size the head of passages read first (`_documents`).
    """
    expressions = [expression]
    if passages:
        narrow = informative(db, expression, passages)
        if narrow != expression:
            expressions.insert(0, narrow)
    per_document = passages / documents if chunked and passages and documents else 1.0
    head = math.ceil(k * HEAD_MARGIN * max(per_document, 1.0))
    for expr in expressions:
        for limit in (head, None):
            found = _documents(db, expr, k, where, chunked, limit)
            if len(found) >= k:  # those matching only the words left out would rank below these
                return found
    return found


# The head holds a quarter more passages than k documents hold on average, so that
# documents with several matching passages, deleted ones and filtered ones rarely empty it
# (the dense side's first scan asks for as many more rows: searching.py).
HEAD_MARGIN = 1.25


def _documents(db: Any, expression: str, k: int, where: tuple[str, list[Any]] | None, chunked: bool,
               limit: int | None) -> list[tuple[int, float]]:
    """The `k` best documents among the `limit` best passages (None: all that match).

    Exact whenever k documents are found: every other document's passages all rank after the
    last one read (by score, then row), so after every document found. Grouping, joining
    and filtering only the head saves most of a search's time (on SciFact's 6,897 passages,
    9.8 ms a query with all 4,000 matches, 6.6 ms with a head of 500)."""
    cond, params = where if where else ("1", [])
    if chunked:
        join, doc = "JOIN passages p ON p.row = h.row JOIN docs d ON d.row = p.doc", "p.doc"
    else:
        join, doc = "JOIN docs d ON d.row = h.row", "d.row"
    head = "" if limit is None else f" ORDER BY bm25(lexical), rowid LIMIT {int(limit)}"
    sql = (
        "WITH hits(row, score) AS MATERIALIZED "
        f"(SELECT rowid, bm25(lexical) FROM lexical WHERE lexical MATCH ?{head}) "
        f"SELECT h.row, MIN(h.score) AS s FROM hits h {join} WHERE d.deleted = 0 AND ({cond}) "
        f"GROUP BY {doc} ORDER BY s, h.row LIMIT ?"
    )
    return [(int(row), -float(s)) for row, s in db.execute(sql, [expression, *params, int(k)])]


def informative(db: Any, expression: str, passages: int) -> str:
    """`expression` (match_expression's) without the words in at least half of `passages`
    rows, whose BM25 idf FTS5 clamps to 1e-6; unchanged when every word is such a word."""
    words = expression.split(" OR ")
    kept = [w for w in words
            if 2 * db.execute("SELECT count(*) FROM lexical WHERE lexical MATCH ?", [w]).fetchone()[0] < passages]
    return " OR ".join(kept) if kept else expression
