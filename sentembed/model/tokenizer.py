"""The WordPiece tokenizer of a model directory, with the module's truncation.

tokenizer.json may carry its own truncation and fixed padding (the all-mpnet-base-v2 zip
says 128 and 128); the Sentence Transformers module config wins, as in the reference.

    tok = Tokenizer.from_dir(path, max_length=384)
    batch = tok(["a sentence", "another"])   # {"input_ids", "attention_mask"}, padded to longest
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import Tokenizer as FastTokenizer

from .batching import CHARS_PER_TOKEN

# A huge text is cut to a prefix that still holds more than max_length tokens, so truncation
# gives the same tokens without tokenizing megabytes: four times the typical characters of
# that many tokens, checked (and grown where short) by clip.
_CLIP_CHARS_PER_TOKEN = 4 * CHARS_PER_TOKEN


class Tokenizer:
    def __init__(self, fast: FastTokenizer, max_length: int, do_lower_case: bool = False, pad_id: int = 1):
        self.fast = fast
        self.max_length = max_length
        self.do_lower_case = do_lower_case
        self.pad_id = pad_id
        fast.no_padding()
        fast.enable_truncation(max_length=max_length)
        self._untruncated = FastTokenizer.from_str(fast.to_str())
        self._untruncated.no_truncation()

    @classmethod
    def from_dir(cls, path: Path, max_length: int, do_lower_case: bool = False) -> "Tokenizer":
        path = Path(path)
        file = path / "tokenizer.json"
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} is missing; sentembed needs the fast tokenizer file "
                "(save the tokenizer with transformers' save_pretrained to create it)"
            )
        try:
            fast = FastTokenizer.from_file(str(file))
        except Exception as err:  # the Rust side raises a bare Exception on bad JSON
            raise ValueError(f"{file} is not a valid tokenizer file: {err}") from err
        pad_id = fast.token_to_id("<pad>")
        padding = json.loads(file.read_text(encoding="utf-8")).get("padding") or {}
        pad_id = padding.get("pad_id", 1 if pad_id is None else pad_id)
        return cls(fast, max_length, do_lower_case, pad_id)

    def set_max_length(self, max_length: int) -> None:
        self.max_length = max_length
        self.fast.enable_truncation(max_length=max_length)

    def _prepare(self, texts: list[str]) -> list[str]:
        return [t.lower() for t in texts] if self.do_lower_case else list(texts)

    def ids(self, texts: list[str]) -> list[list[int]]:
        """Token ids per text, with special tokens, truncated to max_length."""
        return [e.ids for e in self.fast.encode_batch(self._prepare(texts))]

    def pair_ids(self, pairs: list[tuple[str, str]]) -> list[list[int]]:
        """Token ids per (first, second) pair in the tokenizer's pair template (MPNet's
        `<s> A </s></s> B </s>`), cut to max_length longest-first, as transformers does."""
        return [e.ids for e in self.fast.encode_batch([(a, b) for a, b in
                                                      zip(self._prepare([p[0] for p in pairs]),
                                                          self._prepare([p[1] for p in pairs]))])]

    def count(self, texts: list[str]) -> list[int]:
        """Tokens per text with special tokens, before truncation."""
        return [len(e.ids) for e in self._untruncated.encode_batch(self._prepare(texts))]

    def clip(self, texts: list[str], max_length: int | None = None) -> list[str]:
        """Each text cut to a prefix that still holds more than max_length tokens (default:
        the tokenizer's), so truncating it gives the same tokens as truncating the whole text,
        without tokenizing megabytes. The one place a long text is cut before tokenizing.

            tok.clip(["word " * 1_000_000])   # about max_length * 16 characters, not 5 MB
        """
        max_length = self.max_length if max_length is None else max_length
        limit = max_length * _CLIP_CHARS_PER_TOKEN
        return [t if len(t) <= limit else self._clip_one(t, limit, max_length) for t in texts]

    def _clip_one(self, text: str, limit: int, max_length: int) -> str:
        # Only the token cut in two at the end can differ, and it lies past max_length.
        while limit < len(text):
            if self.count([text[:limit]])[0] >= max_length + 2:
                return text[:limit]
            limit *= 4
        return text

    def ids_and_counts(self, texts: list[str]) -> tuple[list[list[int]], list[int]]:
        """ids() and count() from one pass: each text is tokenized once, untruncated, then
        cut and given its special tokens as ids() does.

            ids, counts = tok.ids_and_counts(texts)   # == tok.ids(texts), tok.count(texts)
        """
        encodings = self._untruncated.encode_batch(self._prepare(texts), add_special_tokens=False)
        specials = self.fast.num_special_tokens_to_add(False)
        return ([self.fast.post_process(e).ids for e in encodings], [len(e.ids) + specials for e in encodings])

    def encodings(self, texts: list[str], add_special_tokens: bool = True) -> list:
        """The tokenizers `Encoding` of each text (ids, tokens, offsets, special-token mask),
        untruncated; offsets index the text as read (lowercased where the model lowercases)."""
        return self._untruncated.encode_batch(self._prepare(texts), add_special_tokens=add_special_tokens)

    def pad(self, ids: list[list[int]], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        width = max((len(row) for row in ids), default=0)
        input_ids = torch.full((len(ids), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}

    def __call__(self, texts: list[str], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        return self.pad(self.ids(texts), device)

    def save(self, path: Path) -> None:
        """Write tokenizer.json without our truncation, so other loaders apply their own."""
        self._untruncated.save(str(Path(path) / "tokenizer.json"))
