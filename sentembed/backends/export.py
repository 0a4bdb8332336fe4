"""Write a model directory with ONNX or OpenVINO files in the reference's published layout.

    export_model("all-mpnet-base-v2", "onnx", Path("out"))                  # out/onnx/model.onnx
    export_model("all-mpnet-base-v2", "openvino", Path("out"), quantize="int8")
    sentembed.load("out", backend="onnx")                                   # loads it by name
"""
from __future__ import annotations

import tempfile
from pathlib import Path

from . import files

FORMATS = ("onnx", "openvino")


def export_model(name_or_path: str, fmt: str, out_dir: Path, quantize: str | None = None) -> Path:
    """Export into out_dir (a full Sentence Transformers directory, so it loads by itself);
    returns the file written."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choices: {', '.join(FORMATS)}")
    if quantize not in (None, "int8"):
        raise ValueError(f"unknown quantize {quantize!r}; choices: int8")
    # The saved-model pipeline is enough: backends sit below the encoder (docs/ARCHITECTURE.md).
    from ..model import ModelSettings, SentencePipeline, resolve_model

    path = resolve_model(name_or_path)
    pipeline = SentencePipeline.load(path).float().eval()
    out_dir = Path(out_dir)
    if not (out_dir / "modules.json").is_file():
        # weights, tokenizer, configs: the directory stands on its own
        pipeline.save(out_dir, ModelSettings.load(path))
    mpnet = pipeline.transformer.mpnet
    target = out_dir / (files.int8_file(fmt) if quantize else files.DEFAULT_FILES[fmt])
    fp32 = files.find(out_dir, fmt, files.DEFAULT_FILES[fmt])
    if fmt == "onnx":
        from .onnx_export import export_onnx, quantize_onnx_int8

        if not quantize:
            return export_onnx(mpnet, target)
        with tempfile.TemporaryDirectory() as tmp:
            return quantize_onnx_int8(fp32 or export_onnx(mpnet, Path(tmp) / "model.onnx"), target)
    from .openvino_export import export_openvino, quantize_openvino_int8, save_ir
    from .openvino_runtime import import_openvino

    onnx_file = files.find(out_dir, "onnx", files.DEFAULT_FILES["onnx"])
    if not quantize:
        if onnx_file is not None:  # the same graph, without tracing the model again
            return save_ir(import_openvino().convert_model(str(onnx_file)), target)
        return export_openvino(mpnet, target)
    with tempfile.TemporaryDirectory() as tmp:
        return quantize_openvino_int8(fp32 or export_openvino(mpnet, Path(tmp) / "openvino_model.xml"), target)
