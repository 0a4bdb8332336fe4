"""CPU inference kernels beside mpnet.py: Linear through oneDNN, and batches run unpadded.

mpnet.py reads as the model's figure; what makes it fast on a CPU lives here. oneDNN serves
CPU inference only; unpadding serves training too (random batches of short texts are about
half padding). Both are switched off together for tracing and export by `stock_kernels()`:

    with stock_kernels():          # F.linear everywhere, padded batches: ONNX can trace that
        torch.onnx.export(model, ...)
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .cpu import cpu


def _onednn_linear_available() -> bool:
    try:
        x = torch.zeros(1, 2)
        torch.ops.mkldnn._linear_pointwise(x, torch.zeros(3, 2), torch.zeros(3), "none", [], "")
        return True
    except (AttributeError, RuntimeError):
        return False


@dataclass
class Kernels:
    """Which CPU kernels inference uses; one object, read by every layer."""

    onednn_linear: bool  # Linear (and Linear + GELU) through oneDNN
    unpad: bool = True   # padded batches with much padding run on their real tokens only


KERNELS = Kernels(onednn_linear=_onednn_linear_available())


@contextlib.contextmanager
def stock_kernels() -> Iterator[None]:
    """Every Linear through F.linear and batches kept padded, for tracing and export:
    oneDNN ops have no ONNX form, and unpadding's nonzero() has no static shape."""
    saved = (KERNELS.onednn_linear, KERNELS.unpad)
    KERNELS.onednn_linear = KERNELS.unpad = False
    try:
        yield
    finally:
        KERNELS.onednn_linear, KERNELS.unpad = saved


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                  activation: str = "none") -> torch.Tensor | None:
    """x @ weight.T + bias (then GELU when asked) through oneDNN, or None where it does not apply.

    On AVX-512 CPUs oneDNN's fp32 GEMM is faster than MKL's, which F.linear uses, at the same
    precision, and it fuses the GELU into the GEMM. bf16 goes through oneDNN only where the
    CPU runs it natively (elsewhere oneDNN refuses it)."""
    if not (
        KERNELS.onednn_linear
        and x.device.type == "cpu"
        and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and cpu().bf16))
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


def real_tokens(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions of the real tokens in the flattened (batch x length) padded layout."""
    return attention_mask.reshape(-1).nonzero().squeeze(1)


class Unpadded:
    """Where the real tokens of a padded batch sit, so per-token work skips the padding.

    Every layer but attention works token by token, so it runs on (tokens, hidden); attention
    scatters its q, k, v back to (batch, length) and gathers its output again. Padding rows of
    the result are zeros, which pooling masks anyway."""

    # below this share of padding the gathers and scatters cost more than they save
    MIN_PADDING = 0.1

    def __init__(self, attention_mask: torch.Tensor):
        self.batch, self.length = attention_mask.shape
        self.index = real_tokens(attention_mask)

    @classmethod
    def at(cls, index: torch.Tensor, batch: int, length: int) -> "Unpadded":
        """From `real_tokens(attention_mask)` found beforehand (a compiled graph takes it as an input)."""
        unpad = cls.__new__(cls)
        unpad.batch, unpad.length, unpad.index = batch, length, index
        return unpad

    @classmethod
    def worth_it(cls, attention_mask: torch.Tensor) -> "Unpadded | None":
        if not KERNELS.unpad or attention_mask.dim() != 2:
            return None
        real = int(attention_mask.count_nonzero())
        return cls(attention_mask) if real < (1 - cls.MIN_PADDING) * attention_mask.numel() else None

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, length, ...) -> (tokens, ...)"""
        return x.reshape(self.batch * self.length, *x.shape[2:]).index_select(0, self.index)

    def scatter(self, x: torch.Tensor) -> torch.Tensor:
        """(tokens, ...) -> (batch, length, ...), zeros at the padding.

        Under a compiler, as a gather (each padded row reads its token's row, or zeros), which
        it fuses into the loads of whatever consumes it (the int8 graph's head-major q, k and v);
        eagerly, zeros then index_copy, which are fewer passes there."""
        if torch.compiler.is_compiling():
            return self._by_gather(x)
        full = x.new_zeros(self.batch * self.length, *x.shape[1:]).index_copy(0, self.index, x)
        return full.view(self.batch, self.length, *x.shape[1:])

    def _by_gather(self, x: torch.Tensor) -> torch.Tensor:
        source = torch.full((self.batch * self.length,), -1, dtype=torch.long, device=x.device)
        source[self.index] = torch.arange(self.index.shape[0], device=x.device)
        real = (source >= 0).view(-1, *[1] * (x.dim() - 1))
        full = torch.where(real, x[source.clamp(min=0)], torch.zeros((), dtype=x.dtype, device=x.device))
        return full.view(self.batch, self.length, *x.shape[1:])
