"""Batch samplers for weighted multi-dataset training, as in the all-mpnet-base-v2 recipe:
every batch comes from one dataset, chosen with P(dataset) ∝ weight (or in turn), and no
text appears twice in a batch (a duplicate would be a false in-batch negative).

>>> s = MixtureBatchSampler([["a", "b"], ["c", "d", "e"]], weights=[1, 3], batch_size=2, seed=0)
>>> len(s)          # exactly the number of batches one pass yields
2
>>> ds, rows = next(iter(s))
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .data import check_weight


def _row_texts(row: Any) -> tuple:
    return tuple(row) if isinstance(row, (tuple, list)) else (row,)


class MixtureBatchSampler:
    """Yields `(dataset_index, row_indices)` batches.

    datasets: the rows of each dataset (any sequence; a row is a text or a tuple of texts).
    weights: sampling weights (> 0); ignored when `round_robin` (datasets in turn).
    num_batches: batches per pass; default: total rows // batch_size (every dataset
        cycles through fresh permutations as it runs out, so the length never lies).
    seed: the same seed gives the same batches; `state_dict()`/`load_state_dict()` resume
        mid-pass at exactly the next batch.
    """

    def __init__(self, datasets: Sequence[Sequence[Any]], weights: Sequence[float] | None = None,
                 batch_size: int = 32, seed: int = 0, round_robin: bool = False,
                 num_batches: int | None = None, dedup: bool = True) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not datasets:
            raise ValueError("no datasets to sample from")
        weights = list(weights) if weights is not None else [1.0] * len(datasets)
        if len(weights) != len(datasets):
            raise ValueError(f"{len(weights)} weights for {len(datasets)} datasets")
        for i, (d, w) in enumerate(zip(datasets, weights)):
            check_weight(w, f"#{i}")
            if len(d) == 0:
                raise ValueError(f"dataset #{i} is empty")
        self.datasets = datasets
        self.weights = np.asarray(weights, dtype=np.float64)
        self.probs = self.weights / self.weights.sum()
        self.batch_size = batch_size
        self.seed = seed
        self.round_robin = round_robin
        self.dedup = dedup
        self.num_batches = num_batches if num_batches is not None else max(1, sum(map(len, datasets)) // batch_size)
        self.reset()

    def reset(self, epoch: int = 0) -> None:
        """Start pass `epoch`; the mixture RNG depends only on (seed, epoch)."""
        self.epoch = epoch
        self.position = 0                      # batches yielded in this pass
        self._rng = np.random.default_rng([self.seed, epoch])
        if epoch == 0 or not hasattr(self, "_cycle"):
            # per dataset: how many permutations used, and the place in the current one
            self._cycle = [0] * len(self.datasets)
            self._pos = [0] * len(self.datasets)
            self._perm = [self._permutation(i, 0) for i in range(len(self.datasets))]

    def _permutation(self, i: int, cycle: int) -> np.ndarray:
        return np.random.default_rng([self.seed, 1_000_003, i, cycle]).permutation(len(self.datasets[i]))

    def __len__(self) -> int:
        return self.num_batches

    def _next_dataset(self) -> int:
        if self.round_robin:
            return self.position % len(self.datasets)
        return int(self._rng.choice(len(self.datasets), p=self.probs))

    def _take(self, i: int) -> list[int]:
        """Next batch from dataset i: skip rows that repeat a text already in the batch."""
        data, rows, seen = self.datasets[i], [], set()
        n, tried = len(data), 0
        while len(rows) < self.batch_size:
            if self._pos[i] >= n:             # dataset exhausted: a fresh permutation
                self._cycle[i] += 1
                self._pos[i] = 0
                self._perm[i] = self._permutation(i, self._cycle[i])
            idx = int(self._perm[i][self._pos[i]])
            self._pos[i] += 1
            tried += 1
            texts = _row_texts(data[idx])
            if self.dedup and any(t in seen for t in texts):
                if tried > 4 * n + self.batch_size:
                    raise ValueError(f"dataset #{i} has too few distinct texts for a batch of {self.batch_size}")
                continue                       # skipped, as the 1B-pairs script does
            seen.update(texts)
            rows.append(idx)
        return rows

    def __iter__(self) -> Iterator[tuple[int, list[int]]]:
        while self.position < self.num_batches:
            i = self._next_dataset()
            rows = self._take(i)
            self.position += 1
            yield i, rows
        self.reset(self.epoch + 1)             # the next `iter()` is the next pass

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue at the next batch (JSON- and torch.save-able)."""
        return {"epoch": self.epoch, "position": self.position, "rng": self._rng.bit_generator.state,
                "cycle": list(self._cycle), "pos": list(self._pos), "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(f"sampler state is for seed {state['seed']}, this sampler has seed {self.seed}")
        self.epoch, self.position = state["epoch"], state["position"]
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["rng"]
        self._cycle, self._pos = list(state["cycle"]), list(state["pos"])
        self._perm = [self._permutation(i, c) for i, c in enumerate(self._cycle)]


def shard(rows: list[int], rank: int, world_size: int) -> list[int]:
    """This rank's slice of a global batch (the sampler draws batch_size × world_size rows,
    so ranks never overlap and gathered negatives stay duplicate-free)."""
    per = len(rows) // world_size
    return rows[rank * per:(rank + 1) * per]
