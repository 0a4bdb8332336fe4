"""Backends on a tiny random MPNet: exactness of ONNX and OpenVINO fp32, the published file
layout, int8, and the errors that name the file and the choices."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import sentembed
from sentembed.backends import check_choices, files

TEXTS = ["A man is playing a guitar.", "The weather is lovely today, isn't it?", "short",
         "A much longer sentence, with commas, numbers like 1234 and words the tokenizer splits apart."]



@pytest.fixture(scope="module")
def tiny_fp32(tiny_model):
    return sentembed.load(str(tiny_model), device="cpu").encode(TEXTS, normalize=False)


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory) -> Path:
    """The tiny model exported in all four published files, by the export command's code."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("openvino")
    from sentembed.backends.export import export_model

    out = tmp_path_factory.mktemp("exported") / "model"
    export_model(str(tiny_model), "onnx", out)
    export_model(str(tiny_model), "onnx", out, quantize="int8")
    export_model(str(tiny_model), "openvino", out)
    if _has("nncf"):
        export_model(str(tiny_model), "openvino", out, quantize="int8")
    return out


def _has(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def test_published_layout(exported):
    assert (exported / "onnx" / "model.onnx").is_file()
    assert (exported / files.int8_file("onnx")).is_file()  # the file for this CPU's class
    assert (exported / "openvino" / "openvino_model.xml").is_file()
    assert (exported / "openvino" / "openvino_model.bin").is_file()
    assert (exported / "modules.json").is_file()  # a full model directory, loadable on its own


def test_onnx_graph_interface(exported):
    import onnxruntime as ort

    session = ort.InferenceSession(str(exported / "onnx" / "model.onnx"), providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    assert list(inputs) == ["input_ids", "attention_mask"]
    assert inputs["input_ids"].shape == ["batch_size", "sequence_length"]
    assert inputs["input_ids"].type == "tensor(int64)"
    assert [o.name for o in session.get_outputs()] == ["last_hidden_state"]


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_fp32_matches_torch(exported, tiny_fp32, backend):
    enc = sentembed.load(str(exported), backend=backend)
    got = enc.encode(TEXTS, normalize=False)
    assert np.abs(got - tiny_fp32).max() < 1e-4
    # Different batch sizes and lengths through the same session: the axes are dynamic.
    one = enc.encode(TEXTS[3:], batch_size=1, normalize=False)
    assert np.abs(one - tiny_fp32[3:]).max() < 1e-4


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_threads_encoding_at_once_each_get_their_vectors(exported, tiny_fp32, backend):
    from support import encode_in_threads

    enc = sentembed.load(str(exported), backend=backend)
    for got in encode_in_threads(enc, TEXTS * 8):
        assert np.abs(got - np.tile(tiny_fp32, (8, 1))).max() < 1e-4


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_missing_default_file_is_exported_on_the_fly(tiny_model, tiny_fp32, backend):
    pytest.importorskip("onnxruntime" if backend == "onnx" else "openvino")
    got = sentembed.load(str(tiny_model), backend=backend).encode(TEXTS, normalize=False)
    assert np.abs(got - tiny_fp32).max() < 1e-4


@pytest.mark.parametrize("backend,file_name", [
    ("onnx", files.int8_file("onnx")),
    ("onnx", files.int8_file("onnx").split("/")[-1]),  # a bare name is looked up in onnx/
    ("openvino", "openvino/openvino_model.xml"),
])
def test_file_name_picks_a_file(exported, tiny_fp32, backend, file_name):
    enc = sentembed.load(str(exported), backend=backend, file_name=file_name)
    assert file_name.split("/")[-1] in enc.pipeline.transformer.mpnet.source
    got = enc.encode(TEXTS, normalize=False)
    cos = (got * tiny_fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(tiny_fp32, axis=1)
    assert cos.min() > 0.9


@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_quantize_int8_loads_the_published_int8_file(exported, backend):
    if backend == "openvino" and not _has("nncf"):
        pytest.skip("nncf not installed")
    enc = sentembed.load(str(exported), backend=backend, quantize="int8")
    assert "qint8" in enc.pipeline.transformer.mpnet.source
    assert enc.encode(TEXTS).shape == (len(TEXTS), 32)


def test_torch_int8(tiny_model, tiny_fp32, monkeypatch):
    monkeypatch.setenv("SENTEMBED_COMPILE", "0")
    enc = sentembed.load(str(tiny_model), quantize="int8")
    got = enc.encode(TEXTS, normalize=False)
    cos = (got * tiny_fp32).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(tiny_fp32, axis=1)
    assert cos.min() > 0.99
    with pytest.raises(RuntimeError, match="no torch weights to save"):
        enc.save("/tmp/never-written")


def test_int8_weights_come_from_float32_whatever_the_dtype(tiny_model, monkeypatch):
    # Quantized after the cast to bf16, they would be another int8 model (and a second compiled
    # graph) for dtype="auto" than for the default.
    monkeypatch.setenv("SENTEMBED_COMPILE", "0")
    layers = {dtype: sentembed.load(str(tiny_model), quantize="int8", dtype=dtype).pipeline.transformer.mpnet._eager()
              .layers[0] for dtype in ("float32", "bfloat16")}
    for name in ("qkv", "o", "ffn_in", "ffn_out"):
        a, b = getattr(layers["float32"], name), getattr(layers["bfloat16"], name)
        assert torch.equal(a.weight_t, b.weight_t) and torch.equal(a.weight_scale, b.weight_scale), name


def test_int8_kernels_give_the_same_vectors(tiny_model, monkeypatch):
    """The AMX kernel (oneDNN's matmul, packed weights) and torch._int_mm compute the same int32
    sums, each converted once to fp32: the eager int8 model gives the very same vectors."""
    from sentembed.backends import int8
    from sentembed.model.int8_matmul import amx_matmul

    if not amx_matmul():
        pytest.skip("no AMX here: int8 products run through torch._int_mm only")
    monkeypatch.setenv("SENTEMBED_COMPILE", "0")
    amx = sentembed.load(str(tiny_model), quantize="int8").encode(TEXTS, normalize=False)
    monkeypatch.setattr(int8, "amx_matmul", lambda: False)
    int_mm = sentembed.load(str(tiny_model), quantize="int8")
    assert not int_mm.pipeline.transformer.mpnet._eager().layers[0].qkv.amx
    np.testing.assert_array_equal(int_mm.encode(TEXTS, normalize=False), amx)


def test_int8_through_amx_plans_longer_forward_passes(tiny_model, monkeypatch):
    """Through AMX an int8 pass holds AMX_TOKEN_BUDGET tokens, elsewhere (and in fp32) 512."""
    from sentembed.backends import int8

    monkeypatch.setenv("SENTEMBED_COMPILE", "0")
    enc = sentembed.load(str(tiny_model), quantize="int8")
    lengths = [300, 300, 300, 300]
    monkeypatch.setattr(int8, "amx_matmul", lambda: True)
    assert enc.token_budget(32) == int8.AMX_TOKEN_BUDGET == 1024
    assert enc.plan_batches(lengths) == [[0, 1, 2], [3]]
    monkeypatch.setattr(int8, "amx_matmul", lambda: False)
    assert enc.plan_batches(lengths) == [[0], [1], [2], [3]]
    assert sentembed.load(str(tiny_model)).plan_batches(lengths) == [[0], [1], [2], [3]]


def test_int8_rows_have_their_own_scale():
    from sentembed.backends.int8 import Int8Linear, quantize_rows

    # A row of outliers must not crush the precision of a row of small values.
    x = torch.tensor([[127.0, -64.0, 1.0, 0.0], [0.5, 0.25, -0.5, 0.0]])
    q, scale = quantize_rows(x)
    assert torch.equal(q[0], torch.tensor([127, -64, 1, 0], dtype=torch.int8))
    assert q[1].abs().max() == 127
    assert ((q.float() * scale - x).abs() <= scale / 2 + 1e-7).all()
    weight = torch.randn(24, 4)
    layer = Int8Linear(weight, torch.zeros(24))
    ref = x @ weight.t()
    assert torch.allclose(layer(x), ref, atol=0.02 * ref.abs().max().item())


def test_int8_outlier_channels_are_kept_apart():
    from sentembed.backends.int8 import Int8Linear

    # One channel 100x the others sets every row's int8 scale and rounds the rest away,
    # unless it is taken out of the int8 rows and multiplied in fp32.
    torch.manual_seed(0)
    x = torch.randn(16, 64)
    x[:, 5] *= 100
    weight = torch.randn(32, 64)
    bias = torch.randn(32)
    ref = x @ weight.t() + bias

    def error(layer: Int8Linear) -> float:
        return ((layer(x) - ref).norm() / (ref - x[:, 5:6] * weight[:, 5]).norm()).item()

    plain, apart = Int8Linear(weight, bias), Int8Linear(weight, bias, outliers=torch.tensor([5]))
    assert error(apart) < 0.02 and error(plain) > 0.15
    assert torch.allclose(apart(x.bfloat16()).float(), ref, atol=0.03 * ref.abs().max().item())


def test_residual_outliers_finds_a_planted_channel(tiny_model):
    from sentembed.backends.int8 import residual_outliers

    mpnet = sentembed.load(str(tiny_model)).pipeline.transformer.mpnet
    with torch.no_grad():
        mpnet.embeddings.LayerNorm.weight[7] = 50.0
    found = residual_outliers(mpnet, 2)
    assert len(found) == len(mpnet.encoder.layer) and found[0].shape == (2,)
    assert 7 in found[0].tolist()
    assert residual_outliers(mpnet, 0) == [None] * len(mpnet.encoder.layer)


def test_int8_gelu_scale_bounds_the_activation():
    from sentembed.backends.int8 import quantize_gelu

    torch.manual_seed(0)
    pre = torch.cat([
        torch.randn(6, 64) * 3,            # FFN-like rows, max well above 3
        -torch.rand(2, 64) * 4,            # all negative: GELU stays within (-0.17, 0]
        torch.full((1, 64), -0.7518),      # GELU's minimum, exactly
        torch.rand(1, 64) * 0.5,           # small positive row
    ])
    q, scale = quantize_gelu(pre)
    exact = F.gelu(pre)
    assert q.dtype == torch.int8 and q.abs().max() <= 127
    assert ((q.float() * scale - exact).abs() <= scale / 2 + 1e-6).all()
    # where max(pre) > 3 the bound is the true max |GELU| to 0.2%: no precision lost
    big = pre.amax(dim=1) > 3
    assert torch.allclose(scale[big, 0] * 127, exact.abs().amax(dim=1)[big], rtol=2e-3)


def test_int8_math_attention_matches_sdpa():
    from sentembed.backends.int8 import math_attention
    from sentembed.model.mpnet import padding_bias

    torch.manual_seed(0)
    q, k, v = (torch.randn(3, 4, 9, 16) for _ in range(3))
    mask = torch.ones(3, 9)
    mask[1, 6:] = 0
    mask[2, 2:] = 0
    bias = torch.randn(1, 4, 9, 9) + padding_bias(mask, torch.float32)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    assert torch.allclose(math_attention(q, k, v, bias), want, atol=1e-5)


def test_threads_follow_torch(exported):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        enc = sentembed.load(str(exported), backend="onnx")
        assert enc.pipeline.transformer.mpnet.session.get_session_options().intra_op_num_threads == 1
    finally:
        torch.set_num_threads(previous)


# -- errors -------------------------------------------------------------------------------

def test_file_name_that_does_not_exist(exported):
    with pytest.raises(FileNotFoundError) as err:
        sentembed.load(str(exported), backend="onnx", file_name="onnx/model_O4.onnx")
    message = str(err.value)
    assert "model_O4.onnx" in message and "onnx/model.onnx" in message  # the file and the choices


def test_file_name_of_the_wrong_kind(exported):
    with pytest.raises(ValueError, match=r"not a openvino file.*openvino_model\.xml"):
        sentembed.load(str(exported), backend="openvino", file_name="onnx/model.onnx")


def test_corrupt_onnx_file(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "onnx" / "model.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ValueError, match=r"model\.onnx is not a valid ONNX model"):
        sentembed.load(str(broken), backend="onnx")


def test_corrupt_openvino_file(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "openvino" / "openvino_model.xml").write_text("<net><layers>")
    with pytest.raises(ValueError, match=r"openvino_model\.xml is not a readable OpenVINO model"):
        sentembed.load(str(broken), backend="openvino")


def test_unsupported_dtype_for_backend(exported):
    with pytest.raises(ValueError, match=r"dtype 'bfloat16' is not supported by backend 'onnx'; choices: float32"):
        sentembed.load(str(exported), backend="onnx", dtype="bfloat16")


def test_float16_on_cpu(tiny_model):
    with pytest.raises(ValueError, match="float16 is not supported on CPU"):
        sentembed.load(str(tiny_model), dtype="float16", device="cpu")


def test_unknown_backend_and_quantization(tiny_model):
    with pytest.raises(ValueError, match="unknown backend 'tensorrt'; choices: torch, onnx, openvino"):
        sentembed.load(str(tiny_model), backend="tensorrt")
    with pytest.raises(ValueError, match="unknown quantize 'int4'"):
        sentembed.load(str(tiny_model), quantize="int4")


def test_int8_and_other_backends_off_cpu():
    with pytest.raises(ValueError, match="quantize='int8' runs on CPU"):
        check_choices("torch", "int8", "float32", torch.device("cuda"))
    with pytest.raises(ValueError, match="backend 'openvino' runs on CPU"):
        check_choices("openvino", None, "float32", torch.device("cuda"))


def test_file_name_with_torch_backend(tiny_model):
    with pytest.raises(ValueError, match="picks an ONNX or OpenVINO file"):
        sentembed.load(str(tiny_model), file_name="onnx/model.onnx")


@pytest.mark.parametrize("backend,module,extra", [("onnx", "onnxruntime", "sentembed[onnx]"),
                                                  ("openvino", "openvino", "sentembed[openvino]")])
def test_backend_not_installed_names_the_extra(tiny_model, monkeypatch, backend, module, extra):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ImportError, match=rf"pip install '{extra}'".replace("[", r"\[").replace("]", r"\]")):
        sentembed.load(str(tiny_model), backend=backend)


def test_export_command(tiny_model, tmp_path):
    pytest.importorskip("onnxruntime")
    import typer
    from typer.testing import CliRunner

    from sentembed.backends.cli import register

    app = typer.Typer()
    register(app)

    @app.callback()
    def main() -> None:  # a group, so `export` stays a subcommand
        pass

    out = tmp_path / "exported"
    result = CliRunner().invoke(app, ["export", str(tiny_model), "--format", "onnx", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "onnx" / "model.onnx").is_file()
    bad = CliRunner().invoke(app, ["export", str(tiny_model), "--format", "tflite", "-o", str(out)])
    assert bad.exit_code == 2 and "choices: onnx, openvino" in bad.output
