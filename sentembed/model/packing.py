"""Packed sequences: a batch as one row of tokens without padding, for GPUs.

A padded batch spends compute on padding in every layer; a packed one concatenates the
sequences, gives every token the id of its sequence and its position within it, and runs
attention block-diagonally (a token sees only its own sequence) with MPNet's relative
position bias added inside, through FlexAttention. Pooling then reduces each sequence's
segment. The result equals the padded path's within float rounding.

    packed = pack([[0, 713, 2], [0, 2]])
    packed.input_ids      # tensor([[0, 713, 2, 0, 2]])
    packed.position_ids   # tensor([[2, 3, 4, 2, 3]])   restarting at padding_idx + 1
    packed.seq_ids        # tensor([0, 0, 0, 1, 1])
    packed.cu_seqlens     # tensor([0, 3, 5], dtype=torch.int32)
    vectors = packed_sentence_embeddings(pipeline, token_ids)   # (n, dim), rows in input order

When it is used: `use_packing(device)` is true on CUDA devices where
`torch.nn.attention.flex_attention` imports and SENTEMBED_PACKING=1; off by default. There
flex_attention runs compiled: a fused kernel that skips the blocks the mask rules out.
Elsewhere it runs eagerly, which materializes the (heads, tokens, tokens) scores: right
for tests on CPU, too slow and too big for production there.

Why opt-in: packing pays on short texts in bulk (several times the padded path's speed on
STS-B sentences on a GPU) but not on documents, where padded batches are as fast or faster,
and compiling FlexAttention for varying row widths takes minutes on the first call. The GPU
runs behind this choice are in benchmarks/RESULTS.md.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from .batching import plan_batches
from .mpnet import AttentionMask, MPNet, relative_position_bucket
from .pipeline import SentencePipeline
from .pooling import Pooling
from .settings import settings

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # torch before 2.5
    create_block_mask = flex_attention = None

# On CUDA, rows are padded to a multiple of FlexAttention's block size, so the compiler
# sees few distinct lengths; the padding is a sequence of its own and is dropped.
CUDA_ALIGN = 128
# Tokens a packed row: a GPU wants large rows; eager FlexAttention elsewhere holds
# (heads, tokens, tokens) scores, so rows there stay small.
CUDA_TOKEN_BUDGET = 16384
EAGER_TOKEN_BUDGET = 1024
_compiled_flex: Callable | None = None


@dataclass(frozen=True)
class PackedBatch:
    """Sequences concatenated into one row (tokens beyond cu_seqlens[-1] are alignment padding)."""
    input_ids: torch.Tensor      # (1, tokens)
    position_ids: torch.Tensor   # (1, tokens), padding_idx + 1 at the start of every sequence
    seq_ids: torch.Tensor        # (tokens,), the sequence each token belongs to
    cu_seqlens: torch.Tensor     # (n + 1,) int32 offsets, as flash-attention's varlen kernels take
    lengths: tuple[int, ...]

    @property
    def num_sequences(self) -> int:
        return len(self.lengths)

    @property
    def num_tokens(self) -> int:
        """Real tokens, without the alignment padding."""
        return sum(self.lengths)


def pack(ids: Sequence[Sequence[int]], padding_idx: int = 1, align: int = 1,
         device: torch.device | str = "cpu") -> PackedBatch:
    """One row from token-id lists; align > 1 pads the row to a multiple of it.

    >>> pack([[0, 9, 2], [0, 2]]).position_ids.tolist()
    [[2, 3, 4, 2, 3]]
    """
    for index, row in enumerate(ids):
        if not row:
            raise ValueError(f"sequence {index} is empty; every sequence needs at least one token")
    lengths = tuple(len(row) for row in ids)
    total = sum(lengths)
    width = -(-total // align) * align
    counts = torch.tensor(lengths + ((width - total,) if width > total else ()), dtype=torch.long)
    seq_ids = torch.repeat_interleave(torch.arange(len(counts)), counts)
    starts = torch.cumsum(counts, 0) - counts
    position_ids = torch.arange(width) - starts[seq_ids] + padding_idx + 1
    position_ids[total:] = padding_idx
    input_ids = torch.full((width,), padding_idx, dtype=torch.long)
    input_ids[:total] = torch.tensor([t for row in ids for t in row], dtype=torch.long)
    cu_seqlens = torch.tensor((0,) + lengths, dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return PackedBatch(input_ids[None].to(device), position_ids[None].to(device), seq_ids.to(device),
                       cu_seqlens.to(device), lengths)


def flex_attention_available() -> bool:
    return flex_attention is not None


def use_packing(device: torch.device | str) -> bool:
    """The encoder's switch: CUDA, FlexAttention present, and SENTEMBED_PACKING=1."""
    return (torch.device(device).type == "cuda" and flex_attention_available()
            and settings().packing)


class PackedMask(AttentionMask):
    """Block-diagonal attention over a packed row (a token sees only its own sequence), the
    relative position bias added inside FlexAttention."""

    def __init__(self, run: Callable, score_mod: Callable, block_mask):
        super().__init__(bias=None)
        self.run, self.score_mod, self.block_mask = run, score_mod, block_mask

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
        return self.run(q, k, v, score_mod=self.score_mod, block_mask=self.block_mask)


def packed_attention(model: MPNet, packed: PackedBatch, compiled: bool | None = None) -> PackedMask:
    """Block-diagonal attention with the relative position bias, built once for all layers.

    compiled: torch.compile'd FlexAttention (None: on CUDA only); else the eager version."""
    if flex_attention is None:
        raise RuntimeError("packed sequences need torch.nn.attention.flex_attention (torch >= 2.5)")
    weight = model.encoder.relative_attention_bias.weight
    compiled = weight.device.type == "cuda" if compiled is None else compiled
    # The bias for every relative distance a sequence can have, (heads, 2 * limit - 1). Within a
    # sequence the distance of two tokens in the row is their distance in the sequence, so
    # row offsets index it directly; clamping only touches pairs the mask removes anyway.
    limit = model.config.max_position_embeddings
    distance = torch.arange(-(limit - 1), limit, device=weight.device)
    buckets = relative_position_bucket(distance, model.encoder.num_buckets)
    table = nn.functional.embedding(buckets, weight).t().contiguous()
    seq_ids = packed.seq_ids

    def score_mod(score, batch, head, q_idx, kv_idx):
        return score + table[head, (kv_idx - q_idx).clamp(-(limit - 1), limit - 1) + limit - 1]

    def same_sequence(batch, head, q_idx, kv_idx):
        return seq_ids[q_idx] == seq_ids[kv_idx]

    width = seq_ids.shape[0]
    block_mask = create_block_mask(same_sequence, None, None, width, width, device=weight.device, _compile=compiled)
    return PackedMask(_flex(compiled), score_mod, block_mask)


def _flex(compiled: bool) -> Callable:
    global _compiled_flex
    if compiled:
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention)
        return _compiled_flex

    def eager(*args, **kwargs):
        # Eager is chosen on purpose (tests, CPU); its "use torch.compile" advice is noise here.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
            return flex_attention(*args, **kwargs)
    return eager


def packed_token_embeddings(model: MPNet, packed: PackedBatch, compiled: bool | None = None) -> torch.Tensor:
    """(num_tokens, hidden): the contextual embedding of every real token, in packed order."""
    attention = packed_attention(model, packed, compiled)
    return model.forward_packed(packed.input_ids, packed.position_ids, attention)[0, : packed.num_tokens]


def pool_packed(pooling: Pooling, tokens: torch.Tensor, packed: PackedBatch, prompt_length: int = 0) -> torch.Tensor:
    """Pooling over segments: (num_tokens, hidden) to (n, output_dimension).

    The tokens go back to a padded (n, longest, hidden) batch for the Pooling module itself,
    so both paths share one implementation of every mode; rows are packed longest first
    from length-sorted texts, so there is little padding to add."""
    n, hidden = packed.num_sequences, tokens.shape[1]
    seq_ids = packed.seq_ids[: tokens.shape[0]]
    within = torch.arange(tokens.shape[0], device=tokens.device) - packed.cu_seqlens[:-1].long()[seq_ids]
    padded = tokens.new_zeros(n, max(packed.lengths), hidden)
    padded[seq_ids, within] = tokens
    mask = torch.zeros(n, max(packed.lengths), dtype=torch.long, device=tokens.device)
    mask[seq_ids, within] = 1
    features = {"token_embeddings": padded, "attention_mask": mask, "prompt_length": prompt_length}
    return pooling(features)["sentence_embedding"]


def packed_sentence_embeddings(modules: Sequence[nn.Module], ids: Sequence[Sequence[int]],
                               token_budget: int | None = None, prompt_length: int = 0,
                               progress: Callable[[int], object] | None = None) -> torch.Tensor:
    """Sentence embeddings of token-id lists, (n, dim) on the model's device, rows in input order.

    modules: a SentencePipeline, or its modules (Transformer, Pooling, then Dense / Normalize).
    Rows hold at most token_budget tokens (a longer sequence goes alone), longest first;
    None: CUDA_TOKEN_BUDGET on CUDA, EAGER_TOKEN_BUDGET elsewhere. prompt_length: the
    prompt's tokens, which Pooling leaves out when its include_prompt is false.

    >>> packed_sentence_embeddings(pipeline, pipeline.transformer.tokenizer.ids(["a", "b c"])).shape
    torch.Size([2, 768])
    """
    modules = list(modules)
    model = getattr(modules[0], "mpnet", None)
    if not isinstance(model, MPNet) or len(modules) < 2 or not isinstance(modules[1], Pooling):
        raise TypeError("packing needs the torch MPNet followed by Pooling (not an ONNX, OpenVINO or int8 backend)")
    device = model.embeddings.word_embeddings.weight.device
    padding_idx = model.config.pad_token_id
    cuda = device.type == "cuda"
    align = CUDA_ALIGN if cuda else 1
    budget = token_budget or (CUDA_TOKEN_BUDGET if cuda else EAGER_TOKEN_BUDGET)
    if not ids:
        return torch.empty((0, SentencePipeline(*modules).dimension), device=device)
    output: torch.Tensor | None = None
    for rows in plan_batches([len(row) for row in ids], budget, packed=True):
        packed = pack([ids[i] for i in rows], padding_idx, align, device)
        tokens = packed_token_embeddings(model, packed)
        features = {"sentence_embedding": pool_packed(modules[1], tokens, packed, prompt_length)}
        for module in modules[2:]:  # Dense, Normalize: per sentence, as in the padded path
            features = module(features)
        vectors = features["sentence_embedding"]
        if output is None:
            output = vectors.new_empty((len(ids), vectors.shape[1]))
        output[torch.tensor(rows, device=device)] = vectors
        if progress is not None:
            progress(len(rows))
    return output
