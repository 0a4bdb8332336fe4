"""The running top-k of an exact scan: candidate rows, each with its score's error bound.

A scan through an approximate copy (int8_scan.py, prefilter.py) knows each score r only within
a bound s, |r - f| <= s, f the fp32 score. Among the rows seen, the k-th largest r - s is a lower
bound L of the k-th best fp32 score, so a row with r + s < L cannot be in the top k; the others
stay candidates and are re-scored in fp32 at the end, which settles the top k exactly. Each
query's best k rows are re-scored now and then during the scan (s becomes 0 for them), so L is
close to the k-th best itself and the window a row must reach is one bound wide, not two. A
plain fp32 scan is the case s = 0, where the best k so far are all that is kept.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch

# Queries re-scored together: the rows of 16 queries' candidates, not of the whole chunk's.
# oneDNN sums an fp32 product of 2 or more queries and 2 or more rows in the same order
# whatever the sizes (of 1 query or 1 row, in another): the scores equal the fp32 scan's.
RESCORE_QUERIES = 16
RESCORE_ROWS = 4096  # rows gathered and re-scored at once
RESCORE_PAIRS = 2048  # candidates a group of queries at least, when re-scoring
HEADROOM = 2.0 ** -50  # float64 rounding of r +- s and of the floor, relative to the values


class Candidates:
    """For each query of a chunk: the rows that may still be in its exact top k.

    A candidate holds a score r and an error bound s with |r - f| <= s, f its fp32 score
    (s = 0: r is f). The k-th largest r - s is a lower bound L of the k-th best f (`kth`); a row
    with r + s < L cannot be in the top k and is dropped. While scanning, a row is kept when
    r + slack + rel |r| >= L, `slack` and `rel` bounding every row's error: one threshold per
    query (`floor`), so almost nothing is listed. Every bound is evaluated in float64 with
    HEADROOM, and compared with fp32 scores rounded down.
    """

    def __init__(self, n_queries: int, k: int, slack: torch.Tensor, rel: float,
                 exact: Callable[[int, int, torch.Tensor], torch.Tensor] | None = None,
                 refine: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
                                  tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """`exact(lo, hi, rows) -> (hi - lo, len(rows))`: fp32 scores of queries [lo, hi) and
        global `rows`, for `tighten` and `rescore` (an approximate scan needs it).
        `refine(query, rows, score, err) -> (score, err)`: tighter scores and bounds of the
        pairs it can, at less cost than `exact`, tried before the final re-scoring."""
        self.n, self.k, self.slack, self.rel, self.exact = n_queries, k, slack, rel, exact
        self.refine = refine
        self.fast = bool(slack.any()) or rel > 0  # approximate scans still in use
        self.query = torch.zeros(0, dtype=torch.long)
        self.row = torch.zeros(0, dtype=torch.long)
        self.score = torch.zeros(0, dtype=torch.float64)
        self.err = torch.zeros(0, dtype=torch.float64)
        self.kth = torch.full((n_queries,), -math.inf, dtype=torch.float64)
        self.floor = torch.full((n_queries,), -math.inf, dtype=torch.float64)
        self.kept = 0  # candidates after the last pruning
        self._floor_changed()

    def add(self, scores: torch.Tensor, offset: int, scale: torch.Tensor | None = None,
            slack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None) -> None:
        """Rows of `scores` (approximate when `slack(q, c)` bounds their error, each row's score
        times `scale[q]` when given) that may still be in the top k."""
        taken = None
        if scores.shape[1] >= self.k and not self._every_kth:
            # Until k rows are seen there is no floor: this chunk's own best k give one, from
            # their fp32 scores where they can be had (then the floor has no error in it).
            best, at = torch.topk(scores.float(), self.k, dim=1)
            if slack is not None and self.exact is not None and bool(torch.isfinite(best).all()):
                q, c = torch.arange(self.n).repeat_interleave(self.k), at.reshape(-1)
                self._append(scores, offset, scale, slack, q, c)
                self.tighten()
                taken = torch.zeros(scores.shape, dtype=torch.bool)
                taken[q, c] = True
            else:
                best = best[:, -1].double()
                best = best * scale if scale is not None else best
                self._raise_floor(best - self._err(self.slack, best) if slack is not None else best)
        q, c = at_or_above(scores, self._scan_floor(scale))
        if taken is not None:
            q, c = q[~taken[q, c]], c[~taken[q, c]]
        self._append(scores, offset, scale, slack, q, c)

    def _append(self, scores: Any, offset: int, scale: torch.Tensor | None,
                slack: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None,
                q: torch.Tensor, c: torch.Tensor) -> None:
        r = scores[q, c].double()
        r = r * scale[q] if scale is not None else r  # exact: a product of two fp32 numbers
        err = self._err(slack(q, c), r) if slack is not None else torch.zeros(len(r), dtype=torch.float64)
        self.query, self.row = torch.cat([self.query, q]), torch.cat([self.row, c + offset])
        self.score, self.err = torch.cat([self.score, r]), torch.cat([self.err, err])
        if len(self.row) > 2 * self.kept + self.n * self.k:  # sorting once the list doubles keeps it linear
            self._prune()

    def _scan_floor(self, scale: torch.Tensor | None) -> torch.Tensor:
        """The floor as `at_or_above` compares scores with it (scores divided by `scale[q]`), in
        float32 rounded down; kept from step to step until the floor moves."""
        if self._scan_floors is None or self._scan_floors[0] is not scale:
            floor = self.floor if scale is None else self.floor / scale
            self._scan_floors = (scale, _down32(floor - HEADROOM * floor.abs()))
        return self._scan_floors[1]

    def _floor_changed(self) -> None:
        self._scan_floors: tuple[torch.Tensor | None, torch.Tensor] | None = None
        self._every_kth = bool(torch.isfinite(self.kth).all())  # every query has a k-th bound

    def _err(self, slack: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """The bound s of scores `r` whose error is at most slack + rel |r|, widened for its own
        float64 evaluation and for that of r - s and r + s."""
        return (slack + self.rel * r.abs()) * (1 + 1e-9) + HEADROOM * r.abs()

    def _raise_floor(self, kth: torch.Tensor) -> None:
        self.kth = torch.where(torch.isfinite(kth) & (kth > self.kth), kth, self.kth)
        # The lowest r with r + _err(slack, r) >= kth, written r + S + R |r| >= kth.
        big_s, big_r = self.slack * (1 + 1e-9), self.rel * (1 + 1e-9) + HEADROOM
        y = self.kth - big_s
        floor = torch.where(y >= 0, y / (1 + big_r), y / (1 - big_r))
        floor = floor - HEADROOM * (self.kth.abs() + big_s + floor.abs())
        self.floor = torch.where(torch.isfinite(self.kth), torch.maximum(self.floor, floor), self.floor)
        self._floor_changed()

    def _ranked(self, key: torch.Tensor) -> torch.Tensor:
        """Positions of each query's candidates, largest `key` first (ties: lower row first)."""
        return torch.from_numpy(np.lexsort((self.row.numpy(), -key.numpy(), self.query.numpy())))

    def _rank(self, q: torch.Tensor) -> torch.Tensor:
        counts = torch.bincount(q, minlength=self.n)
        return torch.arange(len(q)) - (torch.cumsum(counts, 0) - counts)[q]

    def _prune(self) -> None:
        if bool(self.err.any()):
            self._raise_floor(self._kth(self.score - self.err))
            keep = self.score + self.err >= self.kth[self.query]
        else:  # exact scores: the top k so far is all that can matter
            order = self._ranked(self.score)
            self.query, self.row, self.score, self.err = self.query[order], self.row[order], self.score[order], self.err[order]
            rank = self._rank(self.query)
            self._raise_floor(self._kth(self.score))
            keep = rank < self.k
        self.query, self.row, self.score, self.err = self.query[keep], self.row[keep], self.score[keep], self.err[keep]
        self.kept = len(self.row)

    def _kth(self, values: torch.Tensor) -> torch.Tensor:
        """The k-th largest of `values` per query (-inf for a query with fewer candidates)."""
        counts = torch.bincount(self.query, minlength=self.n)
        if not len(self.query) or int(counts.max()) < self.k:
            return torch.full((self.n,), -math.inf, dtype=torch.float64)
        layout = self._padded(values, counts)
        if layout is None:  # a few queries hold most: sort
            order = torch.from_numpy(np.lexsort((-values.numpy(), self.query.numpy())))
            q, v = self.query[order], values[order]
            kth = torch.full((self.n,), -math.inf, dtype=torch.float64)
            at_k = self._rank(q) == self.k - 1
            kth[q[at_k]] = v[at_k]
            return kth
        return torch.topk(layout[0], self.k, dim=1).values[:, -1]

    def _best(self) -> torch.Tensor:
        """Positions of each query's k largest scores (of equal scores, any)."""
        counts = torch.bincount(self.query, minlength=self.n)
        layout = self._padded(self.score, counts)
        if layout is None:
            order = self._ranked(self.score)
            return order[self._rank(self.query[order]) < self.k]
        pad, order = layout
        top = torch.topk(pad, min(self.k, pad.shape[1]), dim=1).indices
        start = torch.cumsum(counts, 0) - counts
        real = top < counts.unsqueeze(1)  # not padding, for a query with fewer than k
        return order[(start.unsqueeze(1) + top)[real]]

    def _padded(self, values: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(pad, order): `values` one row per query, in the order of their positions `order`
        (grouped by query), -inf after each query's last; None when a few queries hold most
        (the rows would be mostly padding)."""
        width = int(counts.max())
        if self.n * width > 4 * len(values) + (1 << 16):
            return None
        # numpy sorts 16-bit keys by radix, ten times as fast as torch.sort on these lists; the
        # queries of a chunk (1,024 unless asked otherwise) fit.
        keys = self.query.numpy().astype(np.int16 if self.n <= 1 << 15 else np.int64)
        order = torch.from_numpy(np.argsort(keys, kind="stable"))
        q = self.query[order]
        pad = torch.full((self.n, width), -math.inf, dtype=torch.float64)
        pad[q, self._rank(q)] = values[order]
        return pad, order

    def rescore(self) -> None:
        """Replace the scores by fp32 ones (`exact`) and keep the top k; the scan goes on in fp32."""
        if len(self.row) > self.kept:
            self._prune()
        self.tighten()
        if self.refine is not None:
            which = (self.err != 0).nonzero()[:, 0]
            score, err = self.refine(self.query[which], self.row[which], self.score[which], self.err[which])
            self.score[which], self.err[which] = score, self._err(err, score)
            self._prune()
        self._settle((self.err != 0).nonzero()[:, 0])
        self.slack, self.rel, self.fast = torch.zeros_like(self.slack), 0.0, False
        self.kth.fill_(-math.inf)
        self.floor.fill_(-math.inf)
        self._floor_changed()
        self._prune()

    def tighten(self) -> None:
        """Score each query's best k by r in fp32 (`exact`): their k-th fp32 score is a lower
        bound of the k-th best with no error in it, where the k-th r - s has one, so the floor
        rises by about one bound and fewer rows are kept."""
        if not bool(self.err.any()) or len(self.row) < self.k:
            return
        best = self._best()
        self._settle(best[self.err[best] != 0])
        self._prune()

    def _settle(self, which: torch.Tensor) -> None:
        """fp32 scores (error 0) for the candidates at positions `which`, in groups of at least 16
        queries (one group where the rows are few: each group's products cost a call)."""
        groups = max(1, min(-(-self.n // RESCORE_QUERIES), len(which) // RESCORE_PAIRS))
        cuts = [self.n * g // groups for g in range(groups + 1)]  # equal groups: none of 1 query
        queries = self.query[which]
        for lo, hi in zip(cuts, cuts[1:]):
            mine = which[(queries >= lo) & (queries < hi)]
            rows, where = torch.unique(self.row[mine], return_inverse=True)
            for s in range(0, len(rows), RESCORE_ROWS):
                sub = (where >= s) & (where < s + RESCORE_ROWS)
                scores = self.exact(lo, hi, rows[s : s + RESCORE_ROWS])
                self.score[mine[sub]] = scores[self.query[mine[sub]] - lo, where[sub] - s].double()
        self.err[which] = 0.0  # the lists are this object's own (made by cat and masks): no copies

    def top(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scores, rows), each (n_queries, k), best first; short rows padded with -inf / -1."""
        order = self._ranked(self.score)
        q, r, s = self.query[order], self.row[order], self.score[order]
        rank = self._rank(q)
        take = rank < self.k
        scores = torch.full((self.n, self.k), -math.inf)
        rows = torch.full((self.n, self.k), -1, dtype=torch.long)
        scores[q[take], rank[take]] = s[take].float()
        rows[q[take], rank[take]] = r[take]
        return scores, rows


def _down32(x: torch.Tensor) -> torch.Tensor:
    """float64 floors rounded down to float32; below float32's range, its lowest value (which
    still keeps out the -inf of excluded rows)."""
    lowest, highest = torch.finfo(torch.float32).min, torch.finfo(torch.float32).max
    y = x.clamp(lowest, highest).float()
    return torch.where((y.double() > x) & (y > lowest), torch.nextafter(y, torch.tensor(-math.inf)), y)


GROUP = 128  # columns scanned as one group when looking for scores above the floor
_BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16}


def at_or_above(scores: torch.Tensor, floor: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(query, column) of every score >= its query's floor (float32); may return a few more.

    Almost nothing passes, so comparing and listing all scores would cost more than the
    product itself. With positive floors the float bits order like integers: the largest
    integer of each group of columns says which groups hold anything, and only those are read.
    """
    if hasattr(scores, "at_or_above"):  # int8_scan.Int8Scores
        return scores.at_or_above(floor)
    n_q, n = scores.shape
    if scores.dtype not in _BITS or n < GROUP or not bool((floor > 0).all()):
        return (scores >= floor.unsqueeze(1)).nonzero(as_tuple=True)
    bits = scores.view(_BITS[scores.dtype])
    # bf16 floor: drop the low 16 bits of the float32 one, which rounds it down (it is positive).
    key = floor.view(torch.int32) >> 16 if scores.dtype == torch.bfloat16 else floor.view(torch.int32)
    key = key.to(bits.dtype).unsqueeze(1)
    main = n - n % GROUP
    groups = bits[:, :main].unflatten(1, (main // GROUP, GROUP))  # a view: no copy
    gq, gg = (groups.amax(dim=2) >= key).nonzero(as_tuple=True)
    # Whole groups are copied out (rows of 128 values), not gathered value by value.
    r, j = (groups[gq, gg] >= key[gq]).nonzero(as_tuple=True)
    q, c = gq[r], gg[r] * GROUP + j
    if main < n:
        tq, tc = (bits[:, main:] >= key).nonzero(as_tuple=True)
        q, c = torch.cat([q, tq]), torch.cat([c, tc + main])
    return q, c
