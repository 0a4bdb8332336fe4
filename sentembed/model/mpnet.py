"""The MPNet encoder, top to bottom, the way the paper draws it.

Weights load from a Hugging Face MPNet checkpoint with the same parameter names
(``embeddings.*``, ``encoder.layer.N.*``, ``encoder.relative_attention_bias``), so a
model saved here loads there and the other way round.

    config = MPNetConfig.from_dict(json.load(open("config.json")))
    model = MPNet(config)
    hidden = model(input_ids, attention_mask)            # (batch, seq, hidden)

Batches with much padding run unpadded (``Unpadded``): Linear, LayerNorm, GELU and dropout
see only the real tokens, and attention alone gets the padded layout back. Sequences packed
into one row run through ``MPNet.forward_packed``, with an attention that packing.py builds
(block-diagonal, the relative bias added inside).
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

# (q, k, v) -> context, each (batch, heads, length, head_dim): what a packed batch passes
# to the layers in place of the additive bias tensor.
AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class MPNetConfig:
    vocab_size: int = 30527
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514
    relative_attention_num_buckets: int = 32
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    initializer_range: float = 0.02

    @classmethod
    def from_dict(cls, raw: dict) -> "MPNetConfig":
        model_type = raw.get("model_type", "mpnet")
        if model_type != "mpnet":
            raise ValueError(f"config.json describes a {model_type!r} model; sentembed runs MPNet only")
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in raw.items() if k in known})
        if config.hidden_size % config.num_attention_heads:
            raise ValueError(
                f"hidden_size {config.hidden_size} is not a multiple of "
                f"num_attention_heads {config.num_attention_heads}"
            )
        if config.hidden_act != "gelu":
            raise ValueError(f"hidden_act {config.hidden_act!r} is not supported; MPNet uses 'gelu'")
        return config

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(model_type="mpnet", architectures=["MPNetModel"])
        return out


def _onednn_linear_available() -> bool:
    try:
        x = torch.zeros(1, 2)
        torch.ops.mkldnn._linear_pointwise(x, torch.zeros(3, 2), torch.zeros(3), "none", [], "")
        return True
    except (AttributeError, RuntimeError):
        return False


_ONEDNN_LINEAR = _onednn_linear_available()
# padded batches run unpadded where worth it (Unpadded.worth_it); export turns this off
_UNPAD = True


@contextlib.contextmanager
def stock_linear() -> Iterator[None]:
    """Run every Linear through F.linear and keep batches padded, for tracing and export:
    oneDNN ops have no ONNX form, and unpadding's nonzero() has no static shape."""
    global _ONEDNN_LINEAR, _UNPAD
    saved, _ONEDNN_LINEAR, _UNPAD = (_ONEDNN_LINEAR, _UNPAD), False, False
    try:
        yield
    finally:
        _ONEDNN_LINEAR, _UNPAD = saved


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  activation: str = "none") -> torch.Tensor | None:
    """x @ weight.T + bias (then GELU when asked) through oneDNN, or None where it does not apply.

    On AVX-512 CPUs oneDNN's fp32 GEMM is 1.3-1.8x faster than MKL's, which F.linear uses,
    at the same precision, and it fuses the GELU into the GEMM. Training and other devices
    take the stock path."""
    if not (
        _ONEDNN_LINEAR
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.bfloat16)
        and x.dtype == weight.dtype
        and not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad))
    ):
        return None
    flat = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, activation, [], "none" if activation == "gelu" else "")
    return out.view(*x.shape[:-1], out.shape[-1])


class Linear(nn.Linear):
    """nn.Linear whose CPU inference runs through oneDNN (see onednn_linear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias) if out is None else out


class Unpadded:
    """Where the real tokens of a padded batch sit, so per-token work skips the padding.

    Random training batches of short texts are about half padding (Quora pairs: 879 real
    tokens of 1,796). Every layer but attention works token by token, so it runs on
    (tokens, hidden); attention scatters its q, k, v back to (batch, length) and gathers its
    output again. Padding rows of the result are zeros, which pooling masks anyway."""

    # below this share of padding the gathers and scatters cost more than they save
    MIN_PADDING = 0.1

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.length = attention_mask.shape
        self.index = attention_mask.reshape(-1).nonzero().squeeze(1)

    @classmethod
    def worth_it(cls, attention_mask: torch.Tensor) -> "Unpadded | None":
        if not _UNPAD or attention_mask.dim() != 2:
            return None
        real = int(attention_mask.count_nonzero())
        return cls(attention_mask) if real < (1 - cls.MIN_PADDING) * attention_mask.numel() else None

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, length, ...) -> (tokens, ...)"""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index)

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) -> (batch, length, ...), zeros at the padding"""
        full = x.new_zeros(self.batch * self.length, *x.shape[1:]).index_copy(0, self.index, x)
        return full.view(self.batch, self.length, *x.shape[1:])


class Embeddings(nn.Module):
    """Word plus absolute position embeddings; positions count real tokens only."""

    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.padding_idx = config.pad_token_id
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=self.padding_idx)
        self.position_embeddings = nn.Embedding(
            config.max_position_embeddings, config.hidden_size, padding_idx=self.padding_idx
        )
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

        Rebuilt whenever a weight changes: an optimizer step bumps the version counters,
        a dtype or device move replaces the tensors."""
        parts = (self.q, self.k, self.v)
        key = tuple((p.weight.data_ptr(), p.weight._version, p.bias.data_ptr(), p.bias._version) for p in parts)
        if self._fused is None or self._fused[0] != key:
            self._fused = (key, torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts]))
        return self._fused[1], self._fused[2]

    def forward(self, x: torch.Tensor, bias: torch.Tensor | AttentionFn, unpad: Unpadded | None = None) -> torch.Tensor:
        qkv = None if self.training else onednn_linear(x, *self._qkv_weights())
        if qkv is None:
            qkv = torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)
        if unpad is not None:
            qkv = unpad.scatter(qkv)
        batch, length, hidden = qkv.shape[0], qkv.shape[1], x.shape[-1]
        q, k, v = qkv.view(batch, length, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if callable(bias):  # a packed row: block-diagonal attention with the bias inside
            context = bias(q, k, v)
        else:
            context = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=self.dropout_p if self.training else 0.0,
            )
        context = context.transpose(1, 2).reshape(batch, length, hidden)
        return self.o(context if unpad is None else unpad.gather(context))


class Attention(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.attn = SelfAttention(config)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, bias: torch.Tensor | AttentionFn, unpad: Unpadded | None = None) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.attn(x, bias, unpad)) + x)


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

    def forward(self, x: torch.Tensor, bias: torch.Tensor | AttentionFn, unpad: Unpadded | None = None) -> torch.Tensor:
        x = self.attention(x, bias, unpad)
        return self.output(self.intermediate(x), x)


class Encoder(nn.Module):
    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.layer = nn.ModuleList(Layer(config) for _ in range(config.num_hidden_layers))
        self.relative_attention_bias = nn.Embedding(config.relative_attention_num_buckets, config.num_attention_heads)
        self.num_buckets = config.relative_attention_num_buckets
        self.gradient_checkpointing = False

    def position_bias(self, length: int) -> torch.Tensor:
        """(1, heads, length, length): one bias for all layers and all sequences."""
        position = torch.arange(length, device=self.relative_attention_bias.weight.device)
        buckets = relative_position_bucket(position[None, :] - position[:, None], self.num_buckets)
        # Contiguous: CUDA's fused attention kernels take a mask only if its last dimension has
        # stride 1. The permuted view has stride `heads` there, which sent every CUDA batch to
        # SDPA's math path (about 2x slower on SciFact documents, measured on an H100).
        return self.relative_attention_bias(buckets).permute(2, 0, 1).contiguous().unsqueeze(0)

    def forward(self, x: torch.Tensor, attention_mask: torch.Tensor, unpad: Unpadded | None = None) -> torch.Tensor:
        """x: (batch, length, hidden), or (tokens, hidden) with `unpad` saying where they sit."""
        bias = self.position_bias(attention_mask.shape[1]).to(x.dtype) + padding_bias(attention_mask, x.dtype)
        for layer in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, bias, unpad, use_reentrant=False)
            else:
                x = layer(x, bias, unpad)
        return x


class MPNet(nn.Module):
    """MPNet without a pooler: token ids in, contextual token embeddings out."""

    def __init__(self, config: MPNetConfig):
        super().__init__()
        self.config = config
        self.embeddings = Embeddings(config)
        self.encoder = Encoder(config)
        self.apply(self._init_weights)

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
    def gradient_checkpointing(self) -> bool:
        return self.encoder.gradient_checkpointing

    @gradient_checkpointing.setter
    def gradient_checkpointing(self, on: bool) -> None:
        self.encoder.gradient_checkpointing = on

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        unpad = Unpadded.worth_it(attention_mask)
        if unpad is None:
            return self.encoder(self.embeddings(input_ids), attention_mask)
        positions = self.embeddings.position_ids(input_ids)
        x = self.embeddings(unpad.gather(input_ids), unpad.gather(positions))
        return unpad.scatter(self.encoder(x, attention_mask, unpad))

    def forward_packed(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention: AttentionFn) -> torch.Tensor:
        """Inference over sequences packed into one row, (1, tokens) in, (1, tokens, hidden) out.

        position_ids restart at padding_idx + 1 for every sequence; `attention` keeps each
        token within its own sequence and adds the relative bias (packing.packed_attention)."""
        x = self.embeddings(input_ids, position_ids)
        for layer in self.encoder.layer:
            x = layer(x, attention)
        return x
