"""How a forward pass runs: torch (fp32, bf16, fp16, int8), ONNX Runtime, OpenVINO.

`sentembed.load(..., backend=, dtype=, quantize=, file_name=)` builds the torch encoder, its
weights left in float32, then calls `apply_backend`, which swaps
`encoder.pipeline.transformer.mpnet` (the MPNet module, `(input_ids, attention_mask) ->
token_embeddings`) for a runtime that does the same:

    backend   dtype               quantize   runs
    torch     float32/bfloat16/   None       our MPNet (handled by load itself)
              float16 (cuda)
    torch     any                 "int8"     int8 weights, per-token int8 activations, VNNI
    onnx      float32             None/int8  ONNX Runtime on onnx/model.onnx | model_qint8_avx512_vnni.onnx
                                             (model_quint8_avx2.onnx on CPUs without VNNI)
    openvino  float32/bfloat16    None/int8  OpenVINO on openvino/openvino_model.xml | _qint8_quantized.xml

Files are looked up in the model directory in the reference's published layout; `file_name`
picks another. A missing default file is exported on the fly (temporarily; `sentembed export`
writes it for good).
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from . import files

if TYPE_CHECKING:  # torch loads with the encoder, not with `sentembed export --help`
    import torch

log = logging.getLogger(__name__)

BACKENDS = ("torch", "onnx", "openvino")
QUANTIZATIONS = (None, "int8")
DTYPES = {"torch": ("float32", "bfloat16", "float16"), "onnx": ("float32",), "openvino": ("float32", "bfloat16")}

__all__ = ["apply_backend", "BACKENDS", "QUANTIZATIONS"]


def check_choices(backend: str, quantize: str | None, dtype: str, device: torch.device) -> None:
    """Refuse combinations that cannot run, naming the valid ones."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choices: {', '.join(BACKENDS)}")
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"unknown quantize {quantize!r}; choices: None, 'int8'")
    if dtype not in DTYPES[backend]:
        raise ValueError(f"dtype {dtype!r} is not supported by backend {backend!r}; choices: {', '.join(DTYPES[backend])}"
                         + ("; for int8 pass quantize='int8'" if backend == "onnx" else ""))
    if backend != "torch" and device.type != "cpu":
        raise ValueError(f"backend {backend!r} runs on CPU here, not {device}; use backend='torch' on {device.type}")
    if quantize == "int8" and device.type != "cpu":
        raise ValueError(f"quantize='int8' runs on CPU (VNNI kernels), not {device}; "
                         "on a GPU use dtype='float16' or 'bfloat16'")


def apply_backend(encoder, path: str | Path, backend: str = "torch", quantize: str | None = None,
                  file_name: str | None = None) -> None:
    """Swap the encoder's MPNet for the requested runtime, in place."""
    path = Path(path)
    dtype = getattr(encoder, "dtype", "float32")
    check_choices(backend, quantize, dtype, encoder.device)
    transformer = encoder.pipeline.transformer
    mpnet = transformer.mpnet
    if backend == "torch":
        if file_name is not None:
            raise ValueError(f"file_name={file_name!r} picks an ONNX or OpenVINO file; pass backend='onnx' or "
                             "'openvino' (backend='torch' reads model.safetensors)")
        if quantize == "int8":
            from ..model.pipeline import SentencePipeline

            transformer.mpnet = int8_runner(mpnet, path, dtype, lambda: SentencePipeline.load(path).transformer.mpnet)
            _rest_in_float32(encoder)
        return
    if backend == "onnx":
        transformer.mpnet = _onnx_runner(mpnet, path, quantize, file_name)
    else:
        transformer.mpnet = _openvino_runner(mpnet, path, quantize, file_name, dtype)
    _rest_in_float32(encoder)


def int8_runner(mpnet: Any, path: Path, dtype: str, read_mpnet: Callable[[], Any]) -> Any:
    """The int8 runner in place of `mpnet` (bf16 between the int8 products where `dtype` says
    so), for the bi-encoder and the cross-encoder alike. `read_mpnet` reads the float MPNet from
    `path` again: the runner builds its eager fallback from it only if a graph found on disk
    fails, rather than keep the float weights (438 MB) for that."""
    import torch

    from .int8 import Int8Runner

    act = torch.bfloat16 if dtype == "bfloat16" else None
    # int8 weights come from the float32 checkpoint whatever `dtype` is: one int8 model (and one
    # compiled graph) for dtype=None, "auto" and "bfloat16", not one from rounded weights
    if next(mpnet.parameters()).dtype != torch.float32:
        raise ValueError("int8 weights are quantized from float32 ones: build the encoder with cast=False")
    return Int8Runner.from_mpnet(mpnet, act_dtype=act, source=str(path), reload=lambda: read_mpnet().float())


def _rest_in_float32(encoder) -> None:
    """The runtimes return float32 token embeddings; pooling, dense and normalize follow suit."""
    for module in list(encoder.pipeline)[1:]:
        module.float()


def _pick_file(path: Path, backend: str, quantize: str | None, file_name: str | None) -> Path | None:
    """The file to load, or None when the default one must be exported first."""
    if file_name is not None:
        return files.require(path, backend, file_name)
    default = files.int8_file(backend) if quantize == "int8" else files.DEFAULT_FILES[backend]
    return files.find(path, backend, default)


def _onnx_runner(mpnet, path: Path, quantize: str | None, file_name: str | None):
    from .onnx_runtime import OnnxRunner, import_onnxruntime

    import_onnxruntime()  # the extra's message before any export work
    file = _pick_file(path, "onnx", quantize, file_name)
    if file is not None:
        files.check_runs_here(file)
        return OnnxRunner(file, mpnet.config)
    from .onnx_export import export_onnx, quantize_onnx_int8

    wanted = files.int8_file("onnx") if quantize == "int8" else files.DEFAULT_FILES["onnx"]
    log.warning("%s has no %s: exporting one for this session (`sentembed export` saves it)", path, wanted)
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = files.find(path, "onnx", files.DEFAULT_FILES["onnx"]) or export_onnx(mpnet, Path(tmp) / "model.onnx")
        file = quantize_onnx_int8(fp32, Path(tmp) / "model_qint8.onnx") if quantize == "int8" else fp32
        # The session holds the graph in memory: the temporary file may go.
        return OnnxRunner(file, mpnet.config, source=f"{wanted} (exported from {path})")


def _openvino_runner(mpnet, path: Path, quantize: str | None, file_name: str | None, dtype: str):
    from .openvino_runtime import OpenVINORunner, import_openvino, read_model

    ov = import_openvino()
    # int8 files: the plugin's own default (bf16 between the int8 products on CPUs that have it).
    precision = None if quantize == "int8" else {"float32": "f32", "bfloat16": "bf16"}[dtype]
    file = _pick_file(path, "openvino", quantize, file_name)
    if file is not None:
        return OpenVINORunner(file, mpnet.config, precision=precision)
    from .onnx_export import export_onnx
    from .openvino_export import compress_int8

    wanted = files.int8_file("openvino") if quantize == "int8" else files.DEFAULT_FILES["openvino"]
    log.warning("%s has no %s: exporting one for this session (`sentembed export` saves it)", path, wanted)
    fp32 = files.find(path, "openvino", files.DEFAULT_FILES["openvino"])
    with tempfile.TemporaryDirectory() as tmp:
        model = read_model(fp32) if fp32 is not None else ov.convert_model(str(export_onnx(mpnet, Path(tmp) / "model.onnx")))
        if quantize == "int8":
            model = compress_int8(model)
        return OpenVINORunner(Path(wanted), mpnet.config, precision=precision, model=model,
                               source=f"{wanted} (exported from {path})")
