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

Inside a graph (torch.export, torch.compile) the packed weight cannot be a tensor of the graph:
the op `sentembed::int8_mm(rows, weight)` takes the plain int8 weight and packs it once per
`PackedWeights` scope, which the caller holds open around each run of one graph:

    with packed_weights(graph):
        graph(inputs)          # each int8_mm packs its weight at the first run, then reuses it
"""
from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

from .cpu import cpu, per_cpu


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


def int8_supported() -> bool:
    """Whether this build of torch multiplies int8 matrices at all (torch._int_mm)."""
    try:
        a = torch.ones(4, 8, dtype=torch.int8)
        return bool(torch._int_mm(a, torch.ones(8, 8, dtype=torch.int8)).sum() > 0)
    except (RuntimeError, AttributeError):
        return False


@per_cpu
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


class PackedWeights:
    """The packed form of each weight one graph multiplies by, found by the weight's address.

    An address names a weight only while the tensor neither moves nor changes: hold one scope
    per graph (whose weights are fixed constants or buffers), and a new one for a new graph."""

    def __init__(self) -> None:
        self._by_address: dict[tuple, Int8Matrix] = {}

    def matrix(self, weight: torch.Tensor) -> Int8Matrix:
        key = (weight.data_ptr(), tuple(weight.shape), tuple(weight.stride()))
        found = self._by_address.get(key)
        if found is None:
            found = self._by_address[key] = Int8Matrix(weight)
        return found

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """int8_mm calls on this thread read and fill this scope until the block ends."""
        outer = getattr(_scope, "packed", None)
        _scope.packed = self
        try:
            yield
        finally:
            _scope.packed = outer


_scope = threading.local()


def packed_weights(graph: object) -> contextlib.AbstractContextManager:
    """The scope of `graph`'s packed weights, kept on the graph (whose weights stay put while it
    lives), made active on this thread; a new graph gets a new scope, since it may reuse the
    addresses of a freed one's weights."""
    packed = getattr(graph, "sentembed_packed_weights", None)
    if packed is None:
        packed = PackedWeights()
        setattr(graph, "sentembed_packed_weights", packed)
    return packed.active()


# Defined through torch.library.Library rather than torch.library.custom_op: the latter wraps
# the kernel so that its first call imports torch._dynamo (2.3 s of a process's first vector).
_LIBRARY = torch.library.Library("sentembed", "DEF")
_LIBRARY.define("int8_mm(Tensor rows, Tensor weight) -> Tensor")


def int8_mm(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """rows (m, k) @ weight (n, k)^T of int8 matrices as float32 (see Int8Matrix); the weight is
    packed once in the active PackedWeights scope, or for this call alone outside any."""
    packed = getattr(_scope, "packed", None)
    matrix = packed.matrix(weight) if packed is not None else Int8Matrix(weight)
    return matrix(rows).float()


def _int8_mm_shape(rows: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return rows.new_empty((rows.shape[0], weight.shape[0]), dtype=torch.float32)


_LIBRARY.impl("int8_mm", int8_mm, "CPU")
torch.library.register_fake("sentembed::int8_mm", _int8_mm_shape, lib=_LIBRARY)
