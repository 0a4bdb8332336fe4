"""Export to OpenVINO IR (from our ONNX graph), and quantize its weights to int8 with NNCF.

    export_openvino(mpnet, Path("model/openvino/openvino_model.xml"))
    quantize_openvino_int8(Path("model/openvino/openvino_model.xml"), Path("model/openvino/openvino_model_qint8_quantized.xml"))
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..io import move_into_place
from ..model.mpnet import MPNet
from .onnx_export import export_onnx
from .openvino_runtime import import_openvino, read_model


def save_ir(model, out: Path) -> Path:
    """Save an ov.Model as out (.xml) + .bin, written beside and moved in."""
    ov = import_openvino()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        # fp32 weights: the default fp16 compression would cost exactness in f32 mode.
        ov.save_model(model, str(staged), compress_to_fp16=False)
        move_into_place(staged.with_suffix(".bin"), out.with_suffix(".bin"))  # the weights first, then
        move_into_place(staged, out)                                          # the graph that names them
    return out


def export_openvino(model: MPNet, out: Path) -> Path:
    """MPNet -> ONNX (temporary) -> OpenVINO IR with fp32 weights."""
    ov = import_openvino()
    with tempfile.TemporaryDirectory() as tmp:
        onnx_file = export_onnx(model, Path(tmp) / "model.onnx")
        # Saved inside the block: the converted model may still read the ONNX file's weights.
        return save_ir(ov.convert_model(str(onnx_file)), out)


def quantize_openvino_int8(src: Path, out: Path) -> Path:
    """int8 weights per output channel (NNCF, data-free); the CPU plugin quantizes the
    activations on the fly in small groups of each token and runs VNNI int8 kernels.

    Static per-tensor activation scales (the reference's recipe for this file name) cost
    MPNet far more fidelity; this needs no calibration data at all."""
    return save_ir(compress_int8(read_model(src)), out)


def compress_int8(model):
    try:
        import nncf
    except ImportError as err:
        raise ImportError("int8 OpenVINO needs NNCF: pip install nncf "
                          "(or load a published openvino_model_qint8_quantized.xml by file_name)") from err
    return nncf.compress_weights(model, mode=nncf.CompressWeightsMode.INT8_SYM)
