"""int8 inference on CPU: per-channel int8 weights, per-token dynamic int8 activations.

Each Linear becomes x -> round(x / s_x) @ W_q^T * s_x * s_w + b, with one scale s_x per token
(row), computed on the fly, and one s_w per output channel; the int8 x int8 -> int32 product
runs on AMX tiles where the CPU has them, else on VNNI (model/int8_matmul.py). Per-token scales
keep MPNet's outlier tokens from crushing everyone else's precision: per-tensor dynamic
quantization reaches a mean cosine of only ~0.70 to fp32 on this model; per-token ~0.997, and
~0.998 with the few outsized channels of the hidden states multiplied apart in fp32 in the QKV
products (residual_outliers).

Everything that is not a matrix product (embeddings, LayerNorm, attention) runs in bf16 on CPUs
that have it, and the compiler (Inductor, ahead of time: compiled.py keeps the result on disk)
fuses the quantize and dequantize passes into their neighbours; without it the same code runs
eagerly, slower, with the same arithmetic up to rounding. Past the GEMMs, the time goes to the
FFN's GELU pass, attention's products and its softmax: each transcendental is computed once per
element (quantize_gelu, math_attention), and the row scales stay fp32 so those passes stay
vectorized (quantize_rows).

    model = Int8Runner.from_mpnet(mpnet)     # in place of encoder.pipeline.transformer.mpnet
"""
from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..model.cpu import cpu
from ..model.int8_matmul import amx_matmul, int8_supported, packed_weights  # noqa: F401 (int8_supported: public here)
from ..model.kernels import Unpadded, real_tokens
from ..model.mpnet import AttentionMask, MPNet, padding_bias, run_layers
from ..model.settings import settings
from .session import BackendRunner

# Layers left in the activation dtype by default: none. Per-token int8 on all 72 Linear layers
# gives mean cosine ~0.998 (>= 0.99); "output.dense" (the FFN's 3072 -> 768 output) is the
# one to keep if more fidelity is wanted (+0.0006 on SciFact documents, for a third more
# GEMM time).
DEFAULT_KEEP: tuple[str, ...] = ()

# Channels of the hidden states entering each layer that its QKV product takes apart, in fp32
# (see residual_outliers): with 4, mean cosine to fp32 on SciFact documents rose from 0.9970 to
# 0.9982, about as high as leaving the QKV products in bf16; 8 or 16 add nothing.
OUTLIER_CHANNELS = 4

# The attention layout's length is a multiple of this, so that a text's vector does not depend
# on the batch it runs in: bf16 attention kernels sum a length's last partial block of keys (AMX
# tiles take 32) in another order, so a text's context would round with the batch's length, and
# per-token int8 turns such a last-bit difference into whole rows rounded otherwise. The extra
# keys cost about 2% on sentences.
ATTENTION_ALIGN = 32
# Tokens a forward pass through AMX, whose products pay for more rows than the default 512
# (benchmarks/RESULTS.md, session 19).
AMX_TOKEN_BUDGET = 1024


def quantize_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: returns (int8 (out, in), fp32 scales (out,))."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8 of a 2-D float tensor: (int8 values, fp32 scales (rows, 1))."""
    # max |x| in one pass; no clamp to +-127 needed since |x| / max|x| <= 1. The max is taken
    # of x.float() so that the compiler keeps the scales in fp32: kept in bf16 (exact, but 16-bit),
    # they made every kernel that reads them, the GELU pass among them, convert the int32
    # products with a scalar loop (inductor's code has no vector int32 -> float convert next to
    # 16-bit types), 30% slower.
    amax = torch.linalg.vector_norm(x.float(), ord=float("inf"), dim=-1, keepdim=True)
    return _round_to_int8(x, amax)


def _round_to_int8(x: torch.Tensor, amax: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    amax = amax.clamp(min=1e-12)
    # a multiply by 127 / amax, not a divide by the scale: a vector divide costs several multiplies
    return torch.round(x.float() * (127.0 / amax)).to(torch.int8), amax / 127.0


# GELU's most negative value, GELU(-0.7518) = -0.16997, rounded up.
GELU_MIN_BOUND = 0.17


def quantize_gelu(pre: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row int8 of GELU(pre), GELU evaluated once per element.

    The row's scale comes from max(pre) instead of max |GELU(pre)|: GELU(x) < x for x > 0
    and |GELU(x)| < 0.17 for x < 0, so max(max(pre), 0.17) bounds the output (and equals its
    max to 0.2% once max(pre) > 3, which FFN rows are). The exact max would need a first pass
    that evaluates erf too, or a buffer of the activations: on 300-token documents that pass
    took a third of the FFN's non-GEMM time."""
    amax = pre.amax(dim=-1, keepdim=True).clamp(min=GELU_MIN_BOUND)
    return _round_to_int8(F.gelu(pre), amax)


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + bias) v as two batched products and a softmax.

    Without AMX this beats PyTorch's flash-attention kernel by about 1.6x on documents: one
    sequence's scores stay in cache, and under torch.compile the scale, the bias and the
    softmax become one pass. On AMX that kernel is faster beyond 32 keys and slower at 32,
    and mixing the two would tie a text's vector to its batch (RESULTS, session 19)."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * (q.shape[-1] ** -0.5) + bias
    return torch.matmul(scores.softmax(dim=-1).to(v.dtype), v)


class MathMask(AttentionMask):
    """Attention as two products and one softmax (math_attention), which the compiler fuses."""

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float = 0.0) -> torch.Tensor:
        return math_attention(q, k, v, self.bias)


class Int8Linear(nn.Module):
    """A frozen Linear with int8 weights and per-token int8 activations.

    `outliers`, input channels of outsized magnitude, are taken out of the int8 rows (whose
    scale they would set) and multiplied in fp32 instead: a (rows, k) x (k, out) product."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, outliers: torch.Tensor | None = None):
        super().__init__()
        weight = weight.detach().float()
        apart = outliers is not None and outliers.numel() > 0
        self.register_buffer("outlier_index", outliers if apart else None, persistent=False)
        if apart:
            inliers = torch.ones(weight.shape[1])
            inliers[outliers] = 0
            self.register_buffer("outlier_weight", weight[:, outliers].t().contiguous(), persistent=False)
            self.register_buffer("inlier_mask", inliers, persistent=False)
            weight = weight * inliers  # so that they do not set the weights' scales either
        q, scale = quantize_weight(weight)
        # (in, out) as a transposed view of the (out, in) matrix: _int_mm's fastest layout; the
        # AMX kernel (model/int8_matmul.py) packs the (out, in) matrix once.
        self.amx = amx_matmul()
        self.register_buffer("weight_t", q.t(), persistent=False)
        self.register_buffer("weight_scale", scale, persistent=False)
        bias = bias.detach().float() if bias is not None else torch.zeros(q.shape[0])
        self.register_buffer("bias", bias, persistent=False)
        self.out_features, self.in_features = q.shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(x.reshape(-1, x.shape[-1])).to(x.dtype).view(*x.shape[:-1], self.out_features)

    def project(self, rows: torch.Tensor) -> torch.Tensor:
        """fp32 (rows, out) from float (rows, in)."""
        if self.outlier_index is None:
            return self.product(*quantize_rows(rows))
        inliers = self.product(*quantize_rows(rows * self.inlier_mask.to(rows.dtype)))
        return inliers + rows[:, self.outlier_index].float() @ self.outlier_weight

    def product(self, q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """fp32 (rows, out) from int8 rows and their scales."""
        products = torch.ops.sentembed.int8_mm(q, self.weight_t.t()) if self.amx else torch._int_mm(q, self.weight_t)
        return products.float() * (scale * self.weight_scale) + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per-channel x per-token"


def activation_dtype() -> torch.dtype:
    """bf16 where the CPU runs it natively (AVX-512 BF16 / AMX), else fp32."""
    if settings().int8_act_dtype is not None:
        return getattr(torch, settings().int8_act_dtype)
    return torch.bfloat16 if cpu().bf16 else torch.float32


class KeptLinear(nn.Module):
    """A Linear left in the activation dtype (F.linear; fast under torch.compile)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, dtype: torch.dtype):
        super().__init__()
        self.register_buffer("weight", weight.detach().to(dtype), persistent=False)
        self.register_buffer("bias", bias.detach().to(dtype), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


def _linear(weight: torch.Tensor, bias: torch.Tensor, name: str, keep: tuple[str, ...], dtype: torch.dtype,
            outliers: torch.Tensor | None = None) -> nn.Module:
    if name.endswith(keep):
        return KeptLinear(weight, bias, dtype)
    return Int8Linear(weight, bias, outliers)


def residual_outliers(model: MPNet, count: int) -> list[torch.Tensor | None]:
    """Per layer, the `count` channels of the hidden states entering it with the largest magnitude.

    A few channels of MPNet's residual stream run far larger than the rest (555, 461, 568 and
    756 in most layers of all-mpnet-base-v2, up to about 12x the typical channel's peak) and set the
    per-token int8 scale of the QKV product's input. They come with the weights, not the text:
    one forward on random token ids finds nearly the same ones as 200 STS-B train sentences,
    with the same fidelity, and needs no data."""
    if count <= 0:
        return [None] * len(model.encoder.layer)
    peaks: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _, args: peaks.append(args[0].detach().abs().flatten(0, -2).amax(0)))
             for layer in model.encoder.layer]
    config = model.config
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(config.pad_token_id + 1, config.vocab_size, (8, 64), generator=generator)
    ids = ids.to(next(model.parameters()).device)
    training = model.training
    try:
        with torch.no_grad():
            model.eval()(ids, torch.ones_like(ids))
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return [peak.float().topk(min(count, peak.numel())).indices.cpu() for peak in peaks]


class Int8Layer(nn.Module):
    """One MPNet layer: fused QKV, attention with the shared bias, output, FFN; post-LayerNorm."""

    def __init__(self, layer: nn.Module, prefix: str, keep: tuple[str, ...], dtype: torch.dtype, heads: int, eps: float,
                 outliers: torch.Tensor | None = None):
        super().__init__()
        attn = layer.attention.attn
        # Q, K and V in one GEMM: one activation quantization instead of three.
        self.qkv = _linear(torch.cat([attn.q.weight, attn.k.weight, attn.v.weight]),
                           torch.cat([attn.q.bias, attn.k.bias, attn.v.bias]), f"{prefix}.attention.attn.qkv", keep, dtype,
                           outliers)
        self.o = _linear(attn.o.weight, attn.o.bias, f"{prefix}.attention.attn.o", keep, dtype)
        self.ffn_in = _linear(layer.intermediate.dense.weight, layer.intermediate.dense.bias,
                              f"{prefix}.intermediate.dense", keep, dtype)
        self.ffn_out = _linear(layer.output.dense.weight, layer.output.dense.bias, f"{prefix}.output.dense", keep, dtype)
        self.ln1 = nn.LayerNorm(attn.o.out_features, eps=eps).to(dtype)
        self.ln1.load_state_dict({k: v.to(dtype) for k, v in layer.attention.LayerNorm.state_dict().items()})
        self.ln2 = nn.LayerNorm(attn.o.out_features, eps=eps).to(dtype)
        self.ln2.load_state_dict({k: v.to(dtype) for k, v in layer.output.LayerNorm.state_dict().items()})
        self.heads = heads

    def forward(self, x: torch.Tensor, mask: AttentionMask) -> torch.Tensor:
        """x: (tokens, hidden), the real tokens alone; attention alone sees the padded layout."""
        hidden = x.shape[-1]
        qkv = mask.unpad.scatter(self.qkv(x))
        batch, length = qkv.shape[:2]
        q, k, v = qkv.view(batch, length, 3, self.heads, hidden // self.heads).permute(2, 0, 3, 1, 4)
        # contiguous here, in (batch, heads, length, head) order: left strided, each product copies its operand
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        context = mask.attend(q, k, v)
        x = self.ln1(self.o(mask.unpad.gather(context.transpose(1, 2).reshape(batch, length, hidden))) + x)
        return self.ln2(self.feed_forward(x) + x)

    def feed_forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (isinstance(self.ffn_in, Int8Linear) and isinstance(self.ffn_out, Int8Linear)):
            return self.ffn_out(F.gelu(self.ffn_in(x)))
        # int8 straight from the first product's fp32 output into the second product
        pre = self.ffn_in.project(x.reshape(-1, x.shape[-1]))
        return self.ffn_out.product(*quantize_gelu(pre)).to(x.dtype).view(x.shape)


def position_table(model: MPNet, dtype: torch.dtype) -> torch.Tensor:
    """(heads, positions, positions): the relative position bias of every pair, sliced per batch.
    Kept whole: the bucket arithmetic (a log per pair of positions) cost 2% of a 300-token
    forward when redone every batch."""
    with torch.no_grad():
        # contiguous already (mpnet's position_bias), which the fused softmax needs
        return model.encoder.position_bias(model.config.max_position_embeddings)[0].to(dtype)


class Int8MPNet(nn.Module):
    """The MPNet forward over int8 layers; reads the weights of a loaded MPNet by their
    checkpoint names, so it does not depend on how the torch module computes."""

    def __init__(self, model: MPNet, keep: tuple[str, ...] = DEFAULT_KEEP, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        config = model.config
        self.config = config
        self.embeddings = copy.deepcopy(model.embeddings).float().eval().to(dtype)
        with torch.no_grad():
            outliers = residual_outliers(model, OUTLIER_CHANNELS)
            self.layers = nn.ModuleList(
                Int8Layer(layer, f"encoder.layer.{i}", keep, dtype, config.num_attention_heads, config.layer_norm_eps,
                          outliers[i])
                for i, layer in enumerate(model.encoder.layer)
            )
        self.dtype = dtype

    def forward(self, input_ids: torch.Tensor, bias: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """bias from Int8Runner.attention_bias, built once outside the compiled graph (inside, the
        compiler recomputes it in every softmax); `index`: the real tokens (kernels.real_tokens),
        the only rows every layer but attention computes. The padding's rows come back zeros."""
        unpad = Unpadded.at(index, *input_ids.shape)
        return unpad.scatter(run_layers(self.layers, unpad.gather(self.embeddings(input_ids)), MathMask(bias, unpad)))


class Int8Runner(BackendRunner):
    """The int8 MPNet: its graph compiled ahead of time where this CPU pays for it, else eager.

    A graph found on disk holds the int8 weights as constants, so a later start builds none:
    it costs the key's hash and a load. They are built when there is no graph (eager, or to
    compile one), or when the graph fails and eager takes over (from `reload()` then)."""

    backend = "torch-int8"

    def __init__(self, config, position_bias: torch.Tensor, act_dtype: torch.dtype, source: str,
                 build: Callable[[], Int8MPNet]):
        super().__init__(config, source)
        self.register_buffer("position_bias", position_bias, persistent=False)
        self.act_dtype = act_dtype
        self.model: Int8MPNet | None = None
        self._build: Callable[[], Int8MPNet] | None = build
        self._graph: Callable | None = None
        self._package: Path | None = None  # compile the graph here at the first run

    @classmethod
    def from_mpnet(cls, model: MPNet, keep: tuple[str, ...] = DEFAULT_KEEP, act_dtype: torch.dtype | None = None,
                   compile: bool | None = None, source: str = "",
                   reload: Callable[[], MPNet] | None = None) -> "Int8Runner":
        """An int8 copy of `model` (which is left as it was). `reload` reads the same float MPNet
        again; without it, a graph found on disk keeps `model` alive for the eager fallback."""
        if not int8_supported():
            raise RuntimeError("quantize='int8' needs torch._int_mm on this CPU build of torch; "
                               "use dtype='bfloat16' instead")
        from . import compiled

        act_dtype = act_dtype or activation_dtype()
        float_model = reload or (lambda: model)
        runner = cls(model.config, position_table(model, act_dtype), act_dtype, source or "int8",
                     lambda: Int8MPNet(float_model(), keep, act_dtype).eval())
        if compiled.compile_pays() if compile is None else compile:
            path = compiled.package_path(model, act_dtype, keep)
            runner._graph = compiled.load_package(path)
            if runner._graph is not None:
                return runner
            runner._package = path
        runner.model = Int8MPNet(model, keep, act_dtype).eval()  # the model at hand, not reloaded
        runner._build = None
        return runner

    @property
    def cpu_token_budget(self) -> int | None:
        """Tokens a forward pass on CPU: AMX_TOKEN_BUDGET through AMX, else the default."""
        return AMX_TOKEN_BUDGET if amx_matmul() else None

    @property
    def compiled(self) -> bool:
        """Whether the forward runs a compiled graph (or will, once compiled at the first run)."""
        return self._graph is not None or self._package is not None

    def attention_bias(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """(batch, heads, length, length): the relative position bias, padding keys masked."""
        length = attention_mask.shape[1]
        return self.position_bias[None, :, :length, :length] + padding_bias(attention_mask, self.act_dtype)

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        # a text's vector then does not depend on the batch it runs in (ATTENTION_ALIGN)
        length = input_ids.shape[1]
        extra = -length % ATTENTION_ALIGN
        if extra:
            input_ids = F.pad(input_ids, (0, extra), value=self.config.pad_token_id)
            attention_mask = F.pad(attention_mask, (0, extra))
        return self._run(input_ids, attention_mask)[:, :length]

    def _run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        bias, index = self.attention_bias(attention_mask), real_tokens(attention_mask)
        if self._package is not None:
            self._graph, self._package = self._compile(self._package), None
        if self._graph is not None:
            try:
                with packed_weights(self._graph):
                    return self._graph(input_ids, bias, index).float()
            except Exception as err:  # an inductor gap: fall back, loudly
                warnings.warn(f"the compiled int8 graph failed ({type(err).__name__}: {str(err)[:200]}); "
                              "int8 runs eagerly", stacklevel=2)
                self._graph = None
        with packed_weights(self._eager()):
            return self._eager()(input_ids, bias, index).float()

    def _eager(self) -> Int8MPNet:
        if self.model is None:
            # built inside encode's inference mode, the float weights would be inference tensors,
            # which the float forward of residual_outliers cannot use
            with torch.inference_mode(False):
                self.model, self._build = self._build(), None
        return self.model

    def _compile(self, path: Path) -> Callable:
        """The ahead-of-time package saved at `path` (compiled.py); else torch.compile in this process."""
        from .compiled import compile_package

        try:
            return compile_package(self._eager(), path)
        except Exception as err:
            warnings.warn(f"the int8 graph could not be compiled ahead of time ({type(err).__name__}: "
                          f"{str(err)[:200]}); compiling it in this process instead", stacklevel=3)
        # dynamic: one graph for every batch size and length, compiled once.
        return torch.compile(self._eager(), dynamic=True)

    def extra_repr(self) -> str:
        return f"int8 weights and per-token activations, {self.act_dtype} elsewhere, compiled={self.compiled}"
