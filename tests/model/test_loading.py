"""Loading a checkpoint: its tensors become the weights, with no random draw first (which
took longer than reading them), in float32 whatever the file's dtype."""
from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import sentembed

TEXTS = ["A man is playing a guitar.", "Short", "word " * 40]


def test_loading_draws_no_random_weights(tiny_model, monkeypatch):
    drawn = []
    for name in ("normal_", "uniform_"):
        def record(self, *args, _original=getattr(torch.Tensor, name), **kwargs):
            if not self.is_meta:
                drawn.append(tuple(self.shape))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, record)
    model = sentembed.load(str(tiny_model))
    assert drawn == []
    torch.randn(3).normal_()  # the recorder works
    assert drawn == [(3,)]
    weights = load_file(str(tiny_model / "model.safetensors"))
    ours = model.pipeline.transformer.mpnet.state_dict()
    for name, tensor in ours.items():
        assert torch.equal(tensor, next(v for k, v in weights.items() if k.endswith(name))), name


def test_a_half_precision_checkpoint_loads_as_float32(tiny_model_factory):
    from sentence_transformers import SentenceTransformer

    path = tiny_model_factory()
    file = path / "model.safetensors"
    save_file({k: v.half() if v.is_floating_point() else v for k, v in load_file(str(file)).items()}, str(file))
    model = sentembed.load(str(path))
    assert {p.dtype for p in model.pipeline.parameters()} == {torch.float32}
    assert all(p.requires_grad for p in model.pipeline.transformer.mpnet.parameters())
    reference = SentenceTransformer(str(path), device="cpu")
    np.testing.assert_allclose(model.encode(TEXTS), reference.encode(TEXTS), atol=1e-5, rtol=0)


def test_each_load_reads_the_weights_once(tiny_model, tmp_path, monkeypatch):
    """The int8 runner quantizes the float32 weights as read (the encoder casts nothing first),
    and a cross-encoder's MPNet and head come from one read of the file."""
    import sentembed.model.weights as weights
    from sentembed.backends.int8 import int8_supported
    from tests.support import build_cross_encoder

    reads = []
    monkeypatch.setattr(weights, "load_file", lambda file, _load=weights.load_file: reads.append(file) or _load(file))
    cross_encoder = build_cross_encoder(tmp_path)
    cases = [lambda: sentembed.load_cross_encoder(cross_encoder, device="cpu")]
    if int8_supported():
        cases += [lambda: sentembed.load(str(tiny_model), device="cpu", dtype="auto", quantize="int8"),
                  lambda: sentembed.load_cross_encoder(cross_encoder, device="cpu", dtype="auto", quantize="int8")]
    for load in cases:
        reads.clear()
        model = load()
        assert len(reads) == 1, reads
        model.encode("x") if hasattr(model, "encode") else model.predict(("q", "d"))
