"""Batches under a token budget: which texts run together in one forward pass.

Every place that batches tokens plans here: the encoder's forward passes, the packed rows of
`packing.py`, the server's queue, the pool's chunks. A batch has a layout:

- padded: every text is padded to the longest, so a batch costs count × longest;
- packed: texts are concatenated into one row, so a batch costs the sum of their lengths.

Texts are taken longest first (sorted once, stably), so a padded batch holds texts of similar
length and little is spent on padding. A batch always takes at least one text: a text longer
than the budget goes alone.

    plan_batches([5, 300, 12, 7], token_budget=512, max_texts=32)
    # [[1], [2, 3, 0]]     2 × 300 would pass 512; 3 × 12 fits
    plan_batches([5, 300, 12, 7], token_budget=316, packed=True)
    # [[1, 2], [3, 0]]     300 + 12 fit; + 7 would pass 316, so the next row begins
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

# Characters a token in typical English WordPiece text: for estimates made before tokenizing.
CHARS_PER_TOKEN = 4


@dataclass
class Budget:
    """One batch as it fills: it admits a text while its cost stays within `tokens` and its
    count within `texts` (None: any count); the first text is always admitted.

    >>> b = Budget(tokens=10); b.add(4); b.admits(4), b.admits(6)
    (True, False)
    """

    tokens: int
    texts: int | None = None
    packed: bool = False
    count: int = 0
    longest: int = 0
    total: int = 0

    def cost_with(self, length: int) -> int:
        """The batch's cost with one more text of this length."""
        if self.packed:
            return self.total + length
        return (self.count + 1) * max(self.longest, length, 1)

    def admits(self, length: int) -> bool:
        if self.count == 0:
            return True
        if self.texts is not None and self.count >= self.texts:
            return False
        return self.cost_with(length) <= self.tokens

    def add(self, length: int) -> None:
        self.count += 1
        self.total += length
        self.longest = max(self.longest, length)


def longest_first(lengths: Sequence[int]) -> list[int]:
    """Indices of lengths, longest first; equal lengths keep their order."""
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def fill(order: Iterable[int], lengths: Sequence[int], token_budget: int, max_texts: int | None = None,
         packed: bool = False) -> list[list[int]]:
    """Cut `order` as it comes into consecutive batches under the budget (no sorting)."""
    batches: list[list[int]] = []
    budget = Budget(token_budget, max_texts, packed)
    for i in order:
        if not batches or not budget.admits(lengths[i]):
            batches.append([])
            budget = Budget(token_budget, max_texts, packed)
        batches[-1].append(i)
        budget.add(lengths[i])
    return batches


def plan_batches(lengths: Sequence[int], token_budget: int, max_texts: int | None = None,
                 packed: bool = False) -> list[list[int]]:
    """Indices into `lengths` (token counts), longest first, cut into batches whose padded
    (or, with packed=True, summed) size fits token_budget and that hold at most max_texts.

    >>> plan_batches([2, 9, 3], token_budget=9, max_texts=2)
    [[1], [2, 0]]
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be at least 1, got {token_budget}")
    if max_texts is not None and max_texts < 1:
        raise ValueError(f"max_texts must be at least 1, got {max_texts}")
    return fill(longest_first(lengths), lengths, token_budget, max_texts, packed)


def estimated_tokens(text: str, max_seq_length: int) -> int:
    """A text's tokens guessed from its characters (special tokens included), at most
    max_seq_length + 2: for balancing work where tokenizing first would cost more."""
    return min(len(text) // CHARS_PER_TOKEN, max_seq_length) + 2
