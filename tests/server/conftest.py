"""Server fixtures: a live uvicorn server on 127.0.0.1 in a thread (`live_server`), a
stand-in encoder for logic that needs no model (`fake_encoder`), the tiny model's encoder
and STS-B sentences. Helpers are handed out as fixtures: under --import-mode=importlib a
test module cannot import its neighbours."""
from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from sentembed.encoder import TokenizedTexts
from sentembed.model.batching import plan_batches

import support


class FakeEncoder:
    """Deterministic vectors from a hash of a text's token ids (a word a token): the core API's
    shape, no model.

    `gate`, when given, makes each forward pass wait for it: a way to hold the model busy."""

    def __init__(self, dimension: int = 8, normalizes: bool = True, max_seq_length: int = 16,
                 gate: threading.Event | None = None) -> None:
        self.dimension, self.normalizes, self.max_seq_length = dimension, normalizes, max_seq_length
        self.similarity_fn_name = "cosine" if normalizes else "dot"
        self.prompts = {"query": "query: "}
        self.name = "fake"
        self.gate = gate
        self.calls: list[int] = []

    def _prompt(self, prompt_name: str | None) -> str:
        if prompt_name is not None and prompt_name not in self.prompts:
            raise ValueError(f"unknown prompt_name {prompt_name!r}; this model has {sorted(self.prompts)}")
        return self.prompts[prompt_name] if prompt_name else ""

    def prompt_name_for(self, role: str) -> str | None:
        return role if role in self.prompts else None

    def count_tokens(self, texts: list[str], prompt_name: str | None = None) -> list[int]:
        return self.tokenize_texts(texts, prompt_name).counts

    def tokenize_texts(self, texts: list[str], prompt_name: str | None = None,
                       exact_counts: bool = True) -> TokenizedTexts:
        """A word a token between <s> (0) and </s> (2), cut to max_seq_length."""
        prompt = self._prompt(prompt_name)
        rows = [[0] + [self._word_id(w) for w in (prompt + t).split()] + [2] for t in texts]
        ids = [row if len(row) <= self.max_seq_length else row[: self.max_seq_length - 1] + [2] for row in rows]
        return TokenizedTexts(ids, [len(row) for row in rows], len(prompt.split()))

    @staticmethod
    def _word_id(word: str) -> int:
        return 3 + int.from_bytes(hashlib.sha256(word.encode()).digest()[:3], "little")

    def plan_batches(self, lengths: list[int], batch_size: int = 32) -> list[list[int]]:
        return plan_batches(lengths, 512, batch_size)

    def encode_ids(self, token_ids, prompt_length=0, normalize=None, convert_to="numpy", truncate_dim=None, **_):
        self.calls.append(len(token_ids))
        if self.gate is not None:
            self.gate.wait(10)
        out = (np.stack([self._vector(" ".join(map(str, row))) for row in token_ids]) if token_ids
               else np.zeros((0, self.dimension), np.float32))
        out = out[:, :truncate_dim]
        if normalize and (truncate_dim or not self.normalizes):
            out = out / np.linalg.norm(out, axis=1, keepdims=True)
        return out

    def _vector(self, text: str) -> np.ndarray:
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
        v = np.random.default_rng(seed).standard_normal(self.dimension).astype(np.float32)
        return v / np.linalg.norm(v) if self.normalizes else v

    def encode(self, texts, batch_size=32, normalize=None, prompt_name=None, convert_to="numpy",
               show_progress=None, truncate_dim=None, **_):
        single = isinstance(texts, str)
        ids = self.tokenize_texts([texts] if single else list(texts), prompt_name).ids
        out = self.encode_ids(ids, normalize=normalize, truncate_dim=truncate_dim)
        return out[0] if single else out

    def similarity(self, a, b) -> np.ndarray:
        return np.asarray(a) @ np.asarray(b).T


@pytest.fixture(scope="session", name="live_server")
def live_server_fixture():
    """live_server(app) -> context manager yielding the base URL."""
    return support.live_server


@pytest.fixture(scope="session")
def fake_encoder():
    """The FakeEncoder class."""
    return FakeEncoder


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model):
    import sentembed

    return sentembed.load(str(tiny_model), device="cpu")


@pytest.fixture(scope="session")
def stsb_sentences(stsb_dev) -> list[str]:
    """Unique STS-B dev sentences, in file order."""
    a, b, _ = stsb_dev
    return list(dict.fromkeys(a + b))
