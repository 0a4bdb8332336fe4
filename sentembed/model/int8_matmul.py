"""int8 x int8 products on the fastest exact kernel this CPU has.

`torch._int_mm` reaches oneDNN's s8s8s32 GEMM, which runs on VNNI but never on AMX tiles.
oneDNN's matmul primitive, behind `torch.ops.onednn.qlinear_pointwise`, runs on AMX: on a Xeon
with AMX (2 threads) it multiplies 2048x768 by 768x3072 at 1,740 GOP/s against `_int_mm`'s 755,
and 32,768 corpus rows by 100 queries in 3.6 ms against 6.3. Its weight is packed once, and
its output is fp32: each int32 sum converted once, rounded to nearest, which is what
`_int_mm(...).float()` gives (and the exact sum wherever |sum| < 2^24, i.e. d <= 1,040).
Where the CPU has no AMX, `_int_mm` is as fast or faster, and is used (int32 out).

    >>> w = Int8Matrix(torch.randint(-127, 128, (100, 768), dtype=torch.int8))
    >>> w(torch.randint(-127, 128, (5, 768), dtype=torch.int8)).shape   # x @ w.T
    torch.Size([5, 100])
"""
from __future__ import annotations

import functools

import torch

from .cpu import cpu


class Int8Matrix:
    """An int8 matrix W (n, k), ready to multiply blocks of int8 rows X (m, k): X W^T."""

    def __init__(self, weight: torch.Tensor) -> None:
        self.n, self.k = weight.shape
        if amx_matmul():
            self.packed, self.weight_t = torch.ops.onednn.qlinear_prepack(weight, None), None
            self._ones, self._zeros = torch.ones(self.n), torch.zeros(self.n, dtype=torch.long)
        else:
            self.packed, self.weight_t = None, weight.t()  # _int_mm's fastest layout

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """(m, n): the int32 sums, as int32 or converted once to float32 (AMX)."""
        if self.packed is None:
            return torch._int_mm(rows, self.weight_t)
        return _packed_product(rows, self.packed, self._ones, self._zeros)


def _packed_product(rows: torch.Tensor, packed: torch.Tensor, ones: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    # scales of 1 and zero points of 0: the plain sums, converted to fp32 by the primitive
    return torch.ops.onednn.qlinear_pointwise(rows.contiguous(), 1.0, 0, packed, ones, zeros, None, 1.0, 0,
                                              torch.float32, "none", [], "")


@functools.cache
def amx_matmul() -> bool:
    """Whether int8 products go through oneDNN's matmul primitive: on CPUs with AMX (cpu.py),
    where it is present and sums exactly (checked once, on a small case with extreme values)."""
    if not cpu().amx:
        return False
    gen = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (37, 200), generator=gen, dtype=torch.int8)
    w = torch.randint(-127, 128, (24, 200), generator=gen, dtype=torch.int8)
    a[0], w[0] = 127, -127
    try:
        got = _packed_product(a, torch.ops.onednn.qlinear_prepack(w, None), torch.ones(24),
                              torch.zeros(24, dtype=torch.long))
    except (AttributeError, RuntimeError, NotImplementedError):
        return False
    return bool(torch.equal(got.double(), (a.long() @ w.long().T).double()))
