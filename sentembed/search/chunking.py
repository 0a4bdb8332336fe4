"""Cutting long documents into passages that fit the model, on the model's own token boundaries.

A window holds at most `tokens` tokens (without the special tokens the model adds), so no
passage is truncated; consecutive windows share up to about `overlap` tokens, so a sentence
cut by one window is whole in the next (a window that ends at a sentence end is followed by
the next whole sentences). A window ends at the last paragraph break, sentence end or line
break of its second half, else at a space in its last third, else at the latest space or
other word boundary of the tokenizer; it is cut inside a word only when one word is longer
than a window. Every passage is a span of the document: `text[start:end]` is the passage itself.

>>> chunker = Chunker(tokens=4, overlap=1)           # words as tokens: no model needed
>>> text = "One two three. Four five six seven."
>>> [text[s:e] for s, e in chunker.spans(text)]
['One two three.', 'Four five six', 'six seven.']

A document of many megabytes is tokenized in pieces, so memory stays bounded by the piece
size and the passages, and a progress bar shows how far it is.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

# Characters per piece when tokenizing a long document; pieces end at whitespace, where the
# tokenizer would split anyway, so the tokens equal those of the whole text.
PIECE_CHARS = 1 << 18
# Documents longer than this show a progress bar while they are cut.
PROGRESS_CHARS = 1 << 20
SENTENCE_ENDS = frozenset(".!?;…。！？；")
# Cut preference before a token: higher is better.
MID_WORD, WORD, SPACE, SENTENCE, PARAGRAPH = range(5)
_WORDS = re.compile(r"\w+|[^\w\s]")
_DOCUMENT_PROMPTS = ("document", "passage", "corpus")


@dataclass
class _Tokens:
    """Character offsets of a run of tokens and the word each belongs to."""

    starts: np.ndarray
    ends: np.ndarray
    words: np.ndarray

    def __len__(self) -> int:
        return len(self.starts)

    def tail(self, first: int) -> "_Tokens":
        return _Tokens(self.starts[first:], self.ends[first:], self.words[first:])

    def join(self, other: "_Tokens") -> "_Tokens":
        return _Tokens(*(np.concatenate([a, b]) for a, b in
                         ((self.starts, other.starts), (self.ends, other.ends), (self.words, other.words))))


def _empty() -> _Tokens:
    return _Tokens(*(np.zeros(0, dtype=np.int64) for _ in range(3)))


@dataclass(frozen=True)
class Chunker:
    """Cuts texts into windows of at most `tokens` tokens that share up to about `overlap`.

    `tokenizer` is a `tokenizers.Tokenizer` (the model's); without one, words and
    punctuation marks count as tokens. Build one for a model with `Chunker.for_encoder`.
    """

    tokens: int
    overlap: int
    tokenizer: Any = field(default=None, repr=False, compare=False)
    lowercase: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, (int, np.integer)) or self.tokens < 2:
            raise ValueError(f"chunk_tokens must be an integer of at least 2, got {self.tokens!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, np.integer)) or self.overlap < 0:
            raise ValueError(f"chunk_overlap must be a non-negative integer, got {self.overlap!r}")
        if self.overlap >= self.tokens:
            raise ValueError(f"chunk_overlap ({self.overlap}) must be smaller than chunk_tokens ({self.tokens}): "
                             "each window has to move forward")

    @classmethod
    def for_encoder(cls, enc: Any, tokens: int | None = None, overlap: int | None = None) -> "Chunker":
        """A chunker with `enc`'s tokenizer; `tokens` defaults to what fits the model's
        max_seq_length beside its special tokens and document prompt, `overlap` to a sixth.

        >>> Chunker.for_encoder(sentembed.load("all-mpnet-base-v2"))    # doctest: +SKIP
        Chunker(tokens=382, overlap=63, lowercase=False)
        """
        wrapper = getattr(enc, "tokenizer", None)
        fast = getattr(wrapper, "fast", None)
        tokenizer = None
        if fast is not None:
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(fast.to_str())
            tokenizer.no_truncation()
            tokenizer.no_padding()
        limit = getattr(enc, "max_seq_length", None)
        room = None
        if limit is not None:
            room = int(limit) - (len(tokenizer.encode("").ids) if tokenizer is not None else 2)
            prompts = getattr(enc, "prompts", None) or {}
            prompt = next((prompts[p] for p in _DOCUMENT_PROMPTS if p in prompts), None)
            if prompt:
                room -= len(tokenizer.encode(prompt, add_special_tokens=False).ids) if tokenizer else len(_WORDS.findall(prompt))
        if tokens is None:
            if room is None:
                raise ValueError("this encoder has no max_seq_length: give chunk_tokens")
            tokens = room
        elif room is not None and tokens > room:
            raise ValueError(f"chunk_tokens={tokens} does not fit the model: {enc.name if hasattr(enc, 'name') else 'it'} "
                             f"takes {limit} tokens, {room} of them for the text; use at most {room}")
        if overlap is None:
            overlap = tokens // 6
        return cls(int(tokens), int(overlap), tokenizer, bool(getattr(wrapper, "do_lower_case", False)))

    # ------------------------------------------------------------------ public
    def split(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """The passage spans of each text (at least one each; a short text is one passage, whole)."""
        out: list[list[tuple[int, int]] | None] = [None] * len(texts)
        short = [i for i, t in enumerate(texts) if len(t) <= PIECE_CHARS]
        for i, toks in zip(short, self._tokenize([texts[i] for i in short])):
            out[i] = self._windows(texts[i], iter([toks]))
        for i, t in enumerate(texts):
            if out[i] is None:
                out[i] = self.spans(t)
        return out  # type: ignore[return-value]

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The passage spans of one text: (start, end) character offsets, in order."""
        from tqdm import tqdm

        with tqdm(total=len(text), unit="char", unit_scale=True, desc="chunking",
                  disable=len(text) < PROGRESS_CHARS) as bar:
            return self._windows(text, self._pieces(text, bar))

    # ------------------------------------------------------------------ tokens
    def _tokenize(self, texts: list[str], offsets: Sequence[int] | None = None) -> list[_Tokens]:
        offsets = offsets or [0] * len(texts)
        if self.tokenizer is None:
            out = []
            for t, base in zip(texts, offsets):
                spans = [m.span() for m in _WORDS.finditer(t)]
                arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2) + base
                out.append(_Tokens(arr[:, 0], arr[:, 1], np.arange(len(spans), dtype=np.int64)))
            return out
        prepared = [self._lower(t) for t in texts]
        out = []
        for enc, base in zip(self.tokenizer.encode_batch(prepared, add_special_tokens=False), offsets):
            spans = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2) + base
            words = np.asarray([-1 if w is None else w for w in enc.word_ids], dtype=np.int64)
            keep = spans[:, 1] > spans[:, 0]  # tokens that cover no character are not places to cut
            out.append(_Tokens(spans[keep, 0], spans[keep, 1], words[keep]))
        return out

    def _lower(self, text: str) -> str:
        # Lowercasing that changes the length (rare letters such as 'İ') would move every offset.
        if not self.lowercase:
            return text
        low = text.lower()
        return low if len(low) == len(text) else text

    def _pieces(self, text: str, bar: Any) -> Iterator[_Tokens]:
        """Tokens of `text`, a piece at a time; word numbers never repeat across pieces."""
        start, word_base = 0, 0
        while start < len(text):
            end = min(start + PIECE_CHARS, len(text))
            if end < len(text):
                cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
                end = cut + 1 if cut > start else end
            (toks,) = self._tokenize([text[start:end]], [start])
            toks.words += word_base
            word_base = int(toks.words.max()) + 1 if len(toks) else word_base
            bar.update(end - start)
            yield toks
            start = end

    # ------------------------------------------------------------------ windows
    def _windows(self, text: str, pieces: Iterator[_Tokens]) -> list[tuple[int, int]]:
        buf, done, pos = _empty(), False, 0
        spans: list[tuple[int, int]] = []
        while True:
            while not done and len(buf) - pos <= self.tokens:
                piece = next(pieces, None)
                if piece is None:
                    done = True
                else:
                    buf, pos = buf.tail(pos).join(piece), 0
            if not spans and done and len(buf) <= self.tokens:
                return [(0, len(text))]  # fits: the whole text, as it would be embedded unchunked
            if done and len(buf) - pos <= self.tokens:
                spans.append((int(buf.starts[pos]), int(buf.ends[-1])))
                return spans
            end = self._window_end(text, buf, pos)
            spans.append((int(buf.starts[pos]), int(buf.ends[end - 1])))
            pos = self._next_start(text, buf, pos, end)

    def _cut(self, text: str, buf: _Tokens, j: int) -> int:
        """How good a place to cut is just before token j."""
        if buf.words[j] == buf.words[j - 1] and buf.words[j] >= 0:
            return MID_WORD
        gap = text[buf.ends[j - 1] : buf.starts[j]]
        if "\n\n" in gap or "\n\r\n" in gap:
            return PARAGRAPH
        if "\n" in gap or (text[buf.ends[j - 1] - 1] in SENTENCE_ENDS and (gap or ord(text[buf.ends[j - 1] - 1]) > 0x3000)):
            return SENTENCE
        return SPACE if gap else WORD

    def _best(self, text: str, buf: _Tokens, lo: int, hi: int, least: int) -> int | None:
        """The best cut in [lo, hi] of at least quality `least` (the latest among equals)."""
        best, where = least - 1, None
        for j in range(hi, lo - 1, -1):
            q = self._cut(text, buf, j)
            if q > best:
                best, where = q, j
                if q == PARAGRAPH:
                    break
        return where

    def _window_end(self, text: str, buf: _Tokens, pos: int) -> int:
        hi = pos + self.tokens  # exclusive end: the window is tokens pos .. hi-1
        first = pos + self.overlap + 1  # the next window must start after this one did
        last_half, last_third = max(first, hi - self.tokens // 2), max(first, hi - self.tokens // 3)
        for lo, least in ((last_half, SENTENCE), (last_third, SPACE), (first, SPACE), (first, WORD)):
            end = self._best(text, buf, lo, hi, least)
            if end is not None:
                return end
        return hi  # one word longer than a window

    def _next_start(self, text: str, buf: _Tokens, pos: int, end: int) -> int:
        if self.overlap == 0:
            return end
        # The overlap begins at a sentence (whole sentences repeat, or none when the window
        # ended at one and the next is too long), else at a space after or (up to twice as
        # long) before the overlap's start; a punctuation mark or word piece is a poor start.
        lo = end - self.overlap
        earliest = max(lo - self.overlap, pos + 1)
        for candidates, least in ((range(lo, end + 1), SENTENCE), (range(lo, end), SPACE),
                                  (range(lo - 1, earliest - 1, -1), SPACE), (range(lo, end), WORD)):
            start = next((j for j in candidates if self._cut(text, buf, j) >= least), None)
            if start is not None:
                return start
        return end


def chunker_for(enc: Any, tokens: int | str | None, overlap: int | None) -> Chunker | None:
    """The chunker of `Index.create`'s chunk_tokens ("auto", None or a number) and chunk_overlap."""
    if tokens is None:
        if overlap is not None:
            raise ValueError("chunk_overlap needs chunk_tokens (None keeps whole texts)")
        return None
    if tokens == "auto":
        if getattr(enc, "max_seq_length", None) is None:
            return None  # a stand-in without a window: whole texts
        tokens = None
    elif isinstance(tokens, str):
        raise ValueError(f"chunk_tokens is 'auto', None or a number of tokens, got {tokens!r}")
    return Chunker.for_encoder(enc, tokens, overlap)
