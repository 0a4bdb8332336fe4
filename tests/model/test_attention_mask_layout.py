"""The attention bias reaches SDPA with stride 1 in its last dimension.

CUDA's fused attention kernels (memory-efficient, cuDNN) refuse a mask laid out otherwise,
and SDPA then silently runs its math path: on an H100 that made SciFact documents about 2x
slower. CI has no GPU, so the layout itself is what is checked."""
from __future__ import annotations

import torch

import sentembed
from sentembed.model import mpnet


def test_sdpa_gets_a_mask_the_fused_kernels_accept(tiny_model, monkeypatch):
    encoder = sentembed.load(str(tiny_model), device="cpu")
    texts = ["A man is playing a guitar.", "Hi", "word " * 40]
    expected = encoder.encode(texts)
    masks = []
    sdpa = mpnet.F.scaled_dot_product_attention

    def recording(q, k, v, attn_mask=None, **kwargs):
        masks.append(attn_mask)
        return sdpa(q, k, v, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(mpnet.F, "scaled_dot_product_attention", recording)
    got = encoder.encode(texts)
    assert masks and all(m is not None and m.stride(-1) == 1 for m in masks), [m.stride() for m in masks]
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), atol=0, rtol=0)
