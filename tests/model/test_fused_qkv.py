"""Inference stacks q, k and v into one weight; after a training step it must use the new
weights, also when the optimizer (fused AdamW, the trainer's) updates them without bumping
their version counters."""
from __future__ import annotations

import numpy as np
import torch

import sentembed


def test_encode_after_a_fused_optimizer_step_uses_the_new_weights(tiny_model):
    enc = sentembed.load(str(tiny_model), device="cpu")
    texts = ["a man is eating food", "the dog runs in the park"]
    before = enc.encode(texts)                      # builds the stacked q, k, v copy
    enc.pipeline.train()
    out = enc.pipeline(enc.tokenize(texts))["sentence_embedding"]
    out.sum().backward()
    optimizer = torch.optim.AdamW(enc.pipeline.parameters(), lr=0.05, fused=True)
    optimizer.step()
    enc.pipeline.eval()
    fresh = sentembed.load(str(tiny_model), device="cpu")
    fresh.pipeline.load_state_dict(enc.pipeline.state_dict())
    after = enc.encode(texts)
    assert not np.allclose(after, before, atol=1e-3)
    np.testing.assert_allclose(after, fresh.encode(texts), atol=1e-6)
