"""int8 products through either kernel (torch._int_mm, or oneDNN's matmul on AMX) equal the
int64 products; beyond 2^24 the AMX kernel's fp32 is the int32 sum rounded once."""
from __future__ import annotations

import pytest
import torch

from sentembed.model import int8_matmul
from sentembed.model.int8_matmul import Int8Matrix, amx_matmul


@pytest.fixture(params=["int_mm", "amx"])
def kernel(request, monkeypatch):
    if request.param == "amx" and not amx_matmul():
        pytest.skip("no AMX here: int8 products run through torch._int_mm only")
    if request.param == "int_mm":
        monkeypatch.setattr(int8_matmul, "amx_matmul", lambda: False)
    return request.param


@pytest.mark.parametrize("m, k, n", [(1, 8, 1), (37, 768, 100), (300, 3072, 24)])
def test_products_are_the_integer_products(kernel, m, k, n):
    gen = torch.Generator().manual_seed(m + k + n)
    x = torch.randint(-127, 128, (m, k), generator=gen, dtype=torch.int8)
    w = torch.randint(-127, 128, (n, k), generator=gen, dtype=torch.int8)
    x[0], w[0] = 127, -127  # the largest sum: -127^2 k, past 2^24 for k = 3072
    got = Int8Matrix(w)(x)
    want = x.long() @ w.long().T
    assert got.dtype == (torch.float32 if kernel == "amx" else torch.int32)
    assert torch.equal(got.double(), want.to(torch.int32).float().double())  # one rounding at most


def test_rows_need_not_be_contiguous(kernel):
    x = torch.randint(-127, 128, (64, 16), dtype=torch.int8)
    w = torch.randint(-127, 128, (5, 16), dtype=torch.int8)
    assert torch.equal(Int8Matrix(w)(x[::2]).long(), x[::2].long() @ w.long().T)
