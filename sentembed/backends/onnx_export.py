"""Export the MPNet encoder to ONNX, and quantize it to int8 with ONNX Runtime.

    export_onnx(encoder.pipeline.transformer.mpnet, Path("model/onnx/model.onnx"))
    quantize_onnx_int8(Path("model/onnx/model.onnx"), Path("model/onnx/model_qint8_avx512_vnni.onnx"))

The graph takes input_ids and attention_mask (int64, dynamic batch and sequence) and returns
last_hidden_state (float32), like the reference's published files.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..io import atomic_write, move_into_place
from ..model.cpu import cpu
from ..model.kernels import stock_kernels
from ..model.mpnet import MPNet
from .files import INPUT_NAMES, OUTPUT_NAME

OPSET = 17


def require_onnx() -> None:
    try:
        import onnx  # noqa: F401
    except ImportError as err:
        raise ImportError("exporting to ONNX needs the onnx package: pip install 'sentembed[onnx]'") from err


def export_onnx(model: MPNet, out: Path) -> Path:
    """Write `model` (fp32 copy of its weights) as one self-contained ONNX file."""
    require_onnx()
    import onnx

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    dtype = next(model.parameters()).dtype
    was_training = model.training
    model.eval().float()
    # A short dummy batch; the axes are declared dynamic, and length 8 > the 2 special tokens.
    ids = torch.tensor([[0, 100, 200, 300, 400, 500, 600, 2], [0, 100, 200, 2, 1, 1, 1, 1]])
    mask = (ids != model.config.pad_token_id).long()
    axes = {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
            OUTPUT_NAME: {0: "batch_size", 1: "sequence_length"}}
    try:
        with stock_kernels(), torch.no_grad(), tempfile.TemporaryDirectory(dir=out.parent) as tmp:
            # The TorchScript exporter: no onnxscript needed, and dynamic axes are plain.
            staged = Path(tmp) / "model.onnx"
            torch.onnx.export(model, (ids, mask), str(staged), input_names=list(INPUT_NAMES),
                              output_names=[OUTPUT_NAME], dynamic_axes=axes, opset_version=OPSET,
                              do_constant_folding=True, dynamo=False)
            # One file (the model is 438 MB, under protobuf's 2 GB limit), checked, then written in.
            proto = onnx.load(str(staged))
            onnx.checker.check_model(proto)
            with atomic_write(out) as f:
                onnx.save(proto, f)
    finally:
        model.to(dtype).train(was_training)
    return out


def quantize_onnx_int8(src: Path, out: Path, vnni: bool | None = None) -> Path:
    """ONNX Runtime dynamic int8 (per-channel weights, per-tensor dynamic activations): int8
    weights for VNNI CPUs (the reference's model_qint8_avx512_vnni.onnx), uint8 weights
    elsewhere (its model_quint8_avx2.onnx), where int8 x int8 products saturate.
    `vnni` defaults to this CPU's."""
    try:
        from onnxruntime.quantization import QuantType, quantize_dynamic
    except ImportError as err:
        raise ImportError("int8 ONNX needs onnxruntime: pip install 'sentembed[onnx]'") from err
    vnni = cpu().vnni if vnni is None else vnni
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        quantize_dynamic(str(src), str(staged), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                         reduce_range=False, weight_type=QuantType.QInt8 if vnni else QuantType.QUInt8)
        move_into_place(staged, out)
    return out
