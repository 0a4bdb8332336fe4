"""CrossEncoder: (query, document) pairs in, relevance scores out — the reranker.

    import sentembed
    reranker = sentembed.load_cross_encoder("runs/reranker")
    reranker.predict([("How many people live in Berlin?", "Berlin has 3.5 million people.")])
    reranker.rank("How many people live in Berlin?", documents, top_k=3)

Both texts of a pair go through MPNet together (the tokenizer's pair template), and a head
on the first token gives `num_labels` logits; `predict` applies the model's activation
(sigmoid for one label unless the directory names another, identity for several), as
sentence-transformers' CrossEncoder does. Pairs run in length-sorted batches under the
encoder's token budget; fp32, bf16 or int8 (the int8 backend's MPNet, the head in fp32).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .encoder import PROGRESS_THRESHOLD
from .loaded_model import DTYPES, LoadedModel
from .model import MPNet
from .model.batching import plan_batches
from .model.classifier import CrossEncoderModel
from .model.pipeline import _versions


def validate_pairs(pairs: object) -> tuple[list[tuple[str, str]], bool]:
    """What predict() accepts: one (text, text) pair or a sequence of them. Returns the list
    and whether a single pair was given; a TypeError names the offending item.

    >>> validate_pairs(("q", "d")), validate_pairs([["q", "d"]])
    (([('q', 'd')], True), ([('q', 'd')], False))
    """
    if isinstance(pairs, (str, bytes, dict)) or not isinstance(pairs, (Sequence, np.ndarray)):
        raise TypeError(f"predict() takes (query, document) pairs, got {type(pairs).__name__}")
    items = list(pairs)
    if len(items) == 2 and all(isinstance(t, str) for t in items):
        return [(items[0], items[1])], True
    out = []
    for index, pair in enumerate(items):
        if isinstance(pair, (str, bytes, dict)) or not isinstance(pair, (Sequence, np.ndarray)):
            raise TypeError(f"pair {index} is a {type(pair).__name__}, not a (query, document) pair: {pair!r:.60}")
        if len(pair) != 2:
            raise TypeError(f"pair {index} has {len(pair)} items; a pair has 2 (query, document)")
        for side in (0, 1):
            if not isinstance(pair[side], str):
                raise TypeError(f"pair {index} item {side} is {type(pair[side]).__name__}, not text: {pair[side]!r:.60}")
        out.append((pair[0], pair[1]))
    return out, False


class CrossEncoder(LoadedModel):
    """A loaded cross-encoder; see `sentembed.load_cross_encoder`. Its module is `pipeline`,
    the trainer's name for the module it optimises."""

    def __init__(self, model: CrossEncoderModel, name: str = "", device: torch.device | str | None = None,
                 dtype: str | None = None, cast: bool = True):
        super().__init__(model, name, device, dtype, cast)

    # -- what the model is -------------------------------------------------------------
    @property
    def num_labels(self) -> int:
        return self.pipeline.num_labels

    @property
    def labels(self) -> list[str]:
        return [self.pipeline.id2label[i] for i in range(self.num_labels)]

    @property
    def activation(self) -> str:
        return self.pipeline.activation_name

    def __repr__(self) -> str:
        return (f"CrossEncoder({self.name!r}, num_labels={self.num_labels}, activation={self.activation.rsplit('.', 1)[-1]}, "
                f"max_seq_length={self.max_seq_length}, device={self.device}, dtype={self.dtype})")

    # -- tokens ------------------------------------------------------------------------
    def tokenize_pairs(self, queries: Sequence[str], documents: Sequence[str]) -> dict[str, torch.Tensor]:
        """Padded, truncated pair features on the model's device, for the differentiable path."""
        return self.pipeline.tokenize_pairs([(self._clip(q), self._clip(d)) for q, d in zip(queries, documents)],
                                            self.device)

    def _clip(self, text: str) -> str:
        # A huge text is cut to a prefix that still holds more than max_seq_length tokens:
        # longest-first truncation keeps the same tokens without tokenizing megabytes.
        return self.tokenizer.clip([text], self.max_seq_length)[0]

    # -- scoring -----------------------------------------------------------------------
    def predict(self, pairs: Sequence[tuple[str, str]] | tuple[str, str], batch_size: int = 32,
                activation: bool = True, show_progress: bool | None = None) -> np.ndarray | float:
        """Scores of (query, document) pairs, in input order: (n,) for one label, (n, num_labels)
        for several; one pair gives a float (or a (num_labels,) row).

        activation=False gives the raw logits.

        >>> reranker.predict([("what is MPNet?", "MPNet is a language model."), ("what is MPNet?", "Cats purr.")])
        array([0.93, 0.02], dtype=float32)
        """
        items, single = validate_pairs(pairs)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        logits = self._logits(items, batch_size, show_progress)
        scores = self.pipeline.activation(logits) if activation else logits
        out = (scores[:, 0] if self.num_labels == 1 else scores).numpy()
        return (out[0].item() if self.num_labels == 1 else out[0]) if single else out

    def _logits(self, pairs: list[tuple[str, str]], batch_size: int, show_progress: bool | None) -> torch.Tensor:
        ids = self.tokenizer.pair_ids([(self._clip(q), self._clip(d)) for q, d in pairs])
        # Padded batches of similar lengths under the encoder's token budget (model/batching.py).
        budget = self.token_budget(batch_size)
        output = torch.empty((len(pairs), self.num_labels), dtype=torch.float32)
        show = len(pairs) > PROGRESS_THRESHOLD if show_progress is None else show_progress
        with torch.inference_mode(), tqdm(total=len(pairs), disable=not show, desc="rerank", unit="pair") as bar:
            for rows in plan_batches([len(row) for row in ids], budget, batch_size):
                features = self.tokenizer.pad([ids[i] for i in rows], self.device)
                output[rows] = self.pipeline(features)["scores"].float().cpu()
                bar.update(len(rows))
        return output

    def rank(self, query: str, documents: Sequence[str], top_k: int | None = None, return_documents: bool = True,
             label: str | int | None = None, batch_size: int = 32, activation: bool = True,
             show_progress: bool | None = None) -> list[dict[str, Any]]:
        """The documents best first: [{"corpus_id", "score", "text"}] (text when return_documents).

        A model with several labels ranks by one of them: `label` is its name or index.

        >>> reranker.rank("what is MPNet?", ["Cats purr.", "MPNet is a language model."], top_k=1)
        [{'corpus_id': 1, 'score': 0.93, 'text': 'MPNet is a language model.'}]
        """
        if not isinstance(query, str):
            raise TypeError(f"rank() takes one query text, got {type(query).__name__}")
        if isinstance(documents, str) or not isinstance(documents, (Sequence, np.ndarray)):
            raise TypeError(f"documents must be a list of texts, got {type(documents).__name__}")
        if len(documents) == 0:
            raise ValueError("documents is empty: rank needs at least one document")
        if top_k is not None and (isinstance(top_k, bool) or int(top_k) != top_k or top_k <= 0):
            raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
        column = self._label_column(label)
        scores = self.predict([(query, d) for d in documents], batch_size, activation, show_progress)
        if self.num_labels > 1:
            scores = scores[:, column]
        order = np.argsort(-scores, kind="stable")[: top_k or len(documents)]
        return [{"corpus_id": int(i), "score": float(scores[i]), **({"text": documents[i]} if return_documents else {})}
                for i in order]

    def _label_column(self, label: str | int | None) -> int:
        if self.num_labels == 1:
            if label not in (None, 0, self.labels[0]):
                raise ValueError(f"this cross-encoder has one label ({self.labels[0]!r}); label={label!r} is not it")
            return 0
        if label is None:
            raise ValueError(f"this cross-encoder has {self.num_labels} labels ({', '.join(self.labels)}); "
                             "rank needs label= one of them (a name or an index) to sort by")
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < self.num_labels:
            return label
        if label in self.labels:
            return self.labels.index(label)
        raise ValueError(f"unknown label {label!r}; this cross-encoder has {self.labels} (or an index below {self.num_labels})")

    # -- saving ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a sentence-transformers CrossEncoder directory (atomically) that the reference loads."""
        if not isinstance(self.pipeline.transformer.mpnet, MPNet):
            raise RuntimeError("this cross-encoder runs an int8 copy of its weights; load it without quantize to save it")
        original = self.dtype
        if original != "float32":
            self.pipeline.float()
        try:
            self.pipeline.save(Path(path), _versions())
        finally:
            self.pipeline.to(DTYPES[original])

    @classmethod
    def from_encoder(cls, name_or_path: str | os.PathLike, num_labels: int = 1, activation: str | None = None,
                     device: str | None = None, seed: int | None = None) -> "CrossEncoder":
        """A cross-encoder with a fresh head on a bi-encoder's (or a plain MPNet's) transformer,
        to be trained: `CrossEncoder.from_encoder("all-mpnet-base-v2")`."""
        from .model import SentencePipeline, resolve_model

        path = resolve_model(name_or_path)
        transformer = SentencePipeline.load(path).transformer
        model = CrossEncoderModel.from_transformer(transformer, num_labels, activation, seed)
        return cls(model, str(name_or_path), device or "cpu", "float32")


def load_cross_encoder(name_or_path: str | os.PathLike, device: str | None = None, dtype: str | None = None,
                       quantize: str | None = None) -> CrossEncoder:
    """Load a sentence-transformers CrossEncoder directory (MPNetForSequenceClassification).

    dtype "float32", "bfloat16" (or "auto"); quantize="int8" runs the int8 backend's MPNet
    with the head in fp32. A bi-encoder directory is refused, naming what it holds.

    >>> reranker = sentembed.load_cross_encoder("runs/reranker", quantize="int8")
    """
    from .model import resolve_model

    path = resolve_model(name_or_path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    encoder = CrossEncoder(CrossEncoderModel.load(path), str(name_or_path), device, dtype, cast=quantize is None)
    if quantize is not None:
        from .backends import check_choices, int8_runner

        check_choices("torch", quantize, encoder.dtype, encoder.device)
        transformer = encoder.pipeline.transformer
        transformer.mpnet = int8_runner(transformer.mpnet, path, encoder.dtype,
                                        lambda: CrossEncoderModel.load(path).transformer.mpnet)
    return encoder
