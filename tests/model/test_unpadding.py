"""Batches with much padding run unpadded (kernels.Unpadded): the same vectors as
sentence-transformers on the padded batch, and the same gradients as our padded path."""
from __future__ import annotations

import pytest
import torch

import sentembed
from sentembed.model import kernels, mpnet

# one long text among short ones: most of the padded batch is padding
TEXTS = ["Hi", "word " * 60, "A man is playing a guitar.", "x", "Das ist ein längerer deutscher Satz."]


@pytest.fixture(scope="module", params=["mean", "max", "cls"])
def pair(request, tiny_model_factory):
    from sentence_transformers import SentenceTransformer

    path = tiny_model_factory(pooling=request.param, normalize=False)
    return sentembed.load(str(path), device="cpu"), SentenceTransformer(str(path), device="cpu")


def test_padded_batch_runs_unpadded(pair):
    ours, _ = pair
    mask = ours.tokenize(TEXTS)["attention_mask"]
    assert kernels.Unpadded.worth_it(mask) is not None
    assert kernels.Unpadded.worth_it(torch.ones_like(mask)) is None   # nothing to skip


def test_unpadded_equals_reference(pair):
    ours, ref = pair
    with torch.no_grad():
        got = ours.pipeline(ours.tokenize(TEXTS))
        expected = ref.forward(ref.tokenize(TEXTS))
    torch.testing.assert_close(got["sentence_embedding"], expected["sentence_embedding"], atol=1e-5, rtol=0)
    real = expected["attention_mask"].bool()
    torch.testing.assert_close(got["token_embeddings"][real], expected["token_embeddings"][real], atol=1e-5, rtol=0)
    assert not got["token_embeddings"][~real].any()   # padding rows come back as zeros


def gradients(enc, monkeypatch, unpad: bool, checkpointing: bool = False) -> dict[str, torch.Tensor]:
    monkeypatch.setattr(kernels.KERNELS, "unpad", unpad)
    model = enc.pipeline
    model.zero_grad(set_to_none=True)
    model.transformer.mpnet.gradient_checkpointing = checkpointing
    model.train()
    for m in model.modules():            # no dropout, so both paths see the same network
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        if isinstance(m, mpnet.SelfAttention):
            m.dropout_p = 0.0
    try:
        emb = model(enc.tokenize(TEXTS))["sentence_embedding"]
        (emb @ emb.T).logsumexp(1).sum().backward()
    finally:
        model.transformer.mpnet.gradient_checkpointing = False
        model.eval()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_unpadded_gradients_equal_padded(tiny_model_factory, monkeypatch, checkpointing):
    enc = sentembed.load(str(tiny_model_factory(pooling="mean", normalize=True)), device="cpu")
    padded = gradients(enc, monkeypatch, unpad=False)
    unpadded = gradients(enc, monkeypatch, unpad=True, checkpointing=checkpointing)
    assert padded.keys() == unpadded.keys() and len(padded) > 20
    for name in padded:
        torch.testing.assert_close(unpadded[name], padded[name], atol=1e-5, rtol=1e-4, msg=name)


def test_padded_by_gather_equals_the_scatter():
    """Unpadded's gather (scatter under a compiler, which fuses it into the int8 graph's q, k, v)
    lays the tokens out exactly as its index_copy does, zeros at the padding."""
    from sentembed.model.kernels import Unpadded

    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1]])
    unpad = Unpadded(mask)
    x = torch.randn(int(mask.sum()), 6, 4).bfloat16()
    x[0, 0, 0] = float("nan")  # a token's own NaN stays its own; padding stays zero
    got, want = unpad._by_gather(x), unpad.scatter(x)
    assert got.shape == want.shape == (3, 5, 6, 4) and got.dtype == x.dtype
    assert torch.equal(got.nan_to_num(7.0), want.nan_to_num(7.0))
    assert torch.equal(got[mask == 0], torch.zeros(int((mask == 0).sum()), 6, 4).bfloat16())
