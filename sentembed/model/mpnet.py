"""The MPNet encoder, top to bottom, the way the paper draws it.

Weights load from a Hugging Face MPNet checkpoint with the same parameter names
(``embeddings.*``, ``encoder.layer.N.*``, ``encoder.relative_attention_bias``), so a
model saved here loads there and the other way round.

    config = MPNetConfig.from_dict(json.load(open("config.json")))
    model = MPNet(config)
    hidden = model(input_ids, attention_mask)            # (batch, seq, hidden)

Every layer takes the hidden states and one ``AttentionMask``: who attends to whom, with the
relative position bias. Batches with much padding run unpadded (the mask carries where the
real tokens sit); packed rows bring their own mask (packing.py). The configuration is in
config.py, the CPU kernels in kernels.py.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from .config import MPNetConfig
from .cpu import cpu
from .kernels import Linear, Unpadded, onednn_linear

# Tokens a forward pass in bf16 on AMX tiles, which pay for more rows than the default 512
# (benchmarks/RESULTS.md, session 19).
AMX_BF16_TOKEN_BUDGET = 2048


def embedding(rows: int, dim: int, padding_idx: int | None = None) -> nn.Embedding:
    """An nn.Embedding whose weight MPNet sets (its own random draw would be overwritten)."""
    return nn.Embedding(rows, dim, padding_idx=padding_idx, _weight=torch.empty(rows, dim))


class Embeddings(nn.Module):
    """Word plus absolute position embeddings; positions count real tokens only."""

    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.position_embeddings = embedding(config.max_position_embeddings, config.hidden_size, self.padding_idx)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def position_ids(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_token = input_ids.ne(self.padding_idx).int()
        return (torch.cumsum(is_token, dim=1) * is_token).long() + self.padding_idx

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor | None = None) -> torch.Tensor:
        # Positions start at padding_idx + 1 and padding tokens keep padding_idx, as in fairseq.
        # A packed row brings its own, restarting at padding_idx + 1 for every sequence.
        if position_ids is None:
            position_ids = self.position_ids(input_ids)
        x = self.word_embeddings(input_ids) + self.position_embeddings(position_ids)
        return self.dropout(self.LayerNorm(x))


def relative_position_bucket(relative_position: torch.Tensor, num_buckets: int = 32, max_distance: int = 128) -> torch.Tensor:
    """T5-style buckets: exact for short distances, logarithmic up to max_distance."""
    n = -relative_position
    num_buckets //= 2
    bucket = (n < 0).long() * num_buckets
    n = n.abs()
    max_exact = num_buckets // 2
    is_small = n < max_exact
    log_ratio = torch.log(n.float() / max_exact) / math.log(max_distance / max_exact)
    large = max_exact + (log_ratio * (num_buckets - max_exact)).long()
    large = torch.minimum(large, torch.full_like(large, num_buckets - 1))
    return bucket + torch.where(is_small, n, large)


def padding_bias(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(batch, 1, 1, length): 0 for real keys, the most negative finite value for padding,
    as the reference does, so a row of padding never turns into NaN."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * torch.finfo(dtype).min


class AttentionMask:
    """Which keys each query sees, and the additive bias on its scores: over the padded
    layout, (batch, heads or 1, length, length) of relative position bias plus padding.

    `unpad`, when set, says where the real tokens of the padded batch sit: the layers then
    run on (tokens, hidden) and attention alone gets the padded layout back. packing.py's
    PackedMask, for sequences packed into one row, overrides `attend`."""

    def __init__(self, bias: torch.Tensor | None, unpad: Unpadded | None = None):
        self.bias = bias
        self.unpad = unpad

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
        """(batch, heads, length, head_dim) each -> the context, same shape."""
        return F.scaled_dot_product_attention(q, k, v, attn_mask=self.bias, dropout_p=dropout_p)


class SelfAttention(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.q = Linear(config.hidden_size, config.hidden_size)
        self.k = Linear(config.hidden_size, config.hidden_size)
        self.v = Linear(config.hidden_size, config.hidden_size)
        self.o = Linear(config.hidden_size, config.hidden_size)
        self.dropout_p = config.attention_probs_dropout_prob

        self._fused: tuple[tuple, torch.Tensor, torch.Tensor] | None = None

    def _qkv_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """q, k and v stacked, so inference runs one GEMM instead of three.

        Rebuilt whenever a weight changes: an in-place edit bumps the version counters, a
        dtype or device move replaces the tensors, and `train()` drops the copy, since fused
        optimizers (AdamW(fused=True), the trainer's) update weights without bumping versions."""
        parts = (self.q, self.k, self.v)
        key = tuple((p.weight.data_ptr(), p.weight._version, p.bias.data_ptr(), p.bias._version) for p in parts)
        if self._fused is None or self._fused[0] != key:
            self._fused = (key, torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts]))
        return self._fused[1], self._fused[2]

    def train(self, mode: bool = True) -> "SelfAttention":
        self._fused = None
        return super().train(mode)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        qkv = None if self.training else onednn_linear(x, *self._qkv_weights())
        if qkv is None:
            qkv = torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)
        if mask.unpad is not None:
            qkv = mask.unpad.scatter(qkv)
        batch, length, hidden = qkv.shape[0], qkv.shape[1], x.shape[-1]
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        context = mask.attend(q, k, v, self.dropout_p if self.training else 0.0)
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        return self.o(context if mask.unpad is None else mask.unpad.gather(context))


class Attention(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.attn(x, mask)) + x)


class Intermediate(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = onednn_linear(x, self.dense.weight, self.dense.bias, "gelu")
        return F.gelu(self.dense(x)) if fused is None else fused


class Output(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class Layer(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.attention = Attention(config)
        self.intermediate = Intermediate(config)
        self.output = Output(config)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


def run_layers(layers: Iterable[nn.Module], x: torch.Tensor, mask: AttentionMask,
               checkpointing: bool = False) -> torch.Tensor:
    """The layer stack, for every path (padded, unpadded, packed, int8): x -> layer(x, mask)."""
    for layer in layers:
        x = checkpoint(layer, x, mask, use_reentrant=False) if checkpointing else layer(x, mask)
    return x


class Encoder(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.relative_attention_bias = embedding(config.relative_attention_num_buckets, config.num_attention_heads)
        self.num_buckets = config.relative_attention_num_buckets
        self.gradient_checkpointing = False

    def position_bias(self, length: int) -> torch.Tensor:
        """(1, heads, length, length): one bias for all layers and all sequences."""
        position = torch.arange(length, device=self.relative_attention_bias.weight.device)
        buckets = relative_position_bucket(position[None, :] - position[:, None], self.num_buckets)
        # Contiguous: CUDA's fused attention kernels take a mask only if its last dimension has
        # stride 1 (a strided one sent every CUDA batch to SDPA's slower math path).
        return self.relative_attention_bias(buckets).permute(2, 0, 1).contiguous().unsqueeze(0)

    def mask(self, attention_mask: torch.Tensor, dtype: torch.dtype, unpad: Unpadded | None = None) -> AttentionMask:
        bias = self.position_bias(attention_mask.shape[1]).to(dtype) + padding_bias(attention_mask, dtype)
        return AttentionMask(bias, unpad)

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        """x: (batch, length, hidden), or (tokens, hidden) when the mask unpads."""
        checkpointing = self.gradient_checkpointing and self.training and torch.is_grad_enabled()
        return run_layers(self.layer, x, mask, checkpointing)


class MPNet(nn.Module):
    """MPNet without a pooler: token ids in, contextual token embeddings out."""

    def __init__(self, config: MPNetConfig, initialize: bool = True):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        if initialize:
            self.apply(self._init_weights)

    @classmethod
    def for_checkpoint(cls, config: MPNetConfig) -> "MPNet":
        """An MPNet without weights (on the meta device) for a checkpoint's tensors to become its
        weights (load_state_dict(..., assign=True), as load_encoder_state does): drawing 110M
        random weights and copying the checkpoint over them takes longer than reading it.

        >>> model = MPNet.for_checkpoint(config); model.load_state_dict(state, assign=True)
        """
        with torch.device("meta"):
            return cls(config, initialize=False)

    def _init_weights(self, module: nn.Module) -> None:
        # Only used for models trained from scratch; checkpoints overwrite all of this.
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=self.config.initializer_range)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    @property
    def cpu_token_budget(self) -> int | None:
        """Tokens a forward pass on CPU: AMX_BF16_TOKEN_BUDGET in bf16 on AMX, else the
        encoder's default (None)."""
        bf16 = self.embeddings.word_embeddings.weight.dtype == torch.bfloat16
        return AMX_BF16_TOKEN_BUDGET if bf16 and cpu().amx else None

    @property
    def gradient_checkpointing(self) -> bool:
        return self.encoder.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on: bool) -> None:
        self.encoder.gradient_checkpointing = on

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        unpad = Unpadded.worth_it(attention_mask)
        if unpad is None:
            x = self.embeddings(input_ids)
            return self.encoder(x, self.encoder.mask(attention_mask, x.dtype))
        positions = self.embeddings.position_ids(input_ids)
        x = self.embeddings(unpad.gather(input_ids), unpad.gather(positions))
        return unpad.scatter(self.encoder(x, self.encoder.mask(attention_mask, x.dtype, unpad)))

    def forward_packed(self, input_ids: torch.Tensor, position_ids: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        """Sequences packed into one row, (1, tokens) in, (1, tokens, hidden) out.

        position_ids restart at padding_idx + 1 for every sequence; `mask` keeps each token
        within its own sequence and adds the relative bias (packing.PackedMask)."""
        return self.encoder(self.embeddings(input_ids, position_ids), mask)
