"""Where exported models live in a model directory: the reference's published layout.

    model/onnx/model.onnx                             ONNX, fp32
    model/onnx/model_qint8_avx512_vnni.onnx           ONNX, dynamic int8 (ONNX Runtime), VNNI CPUs
    model/onnx/model_quint8_avx2.onnx                 ONNX, dynamic uint8 weights, CPUs without VNNI
    model/openvino/openvino_model.xml (+ .bin)        OpenVINO IR, fp32 weights
    model/openvino/openvino_model_qint8_quantized.xml OpenVINO IR, int8 (NNCF)

`file_name` picks one, as in the reference: "onnx/model_O3.onnx", or a bare name looked up
in the backend's folder.
"""
from __future__ import annotations

from pathlib import Path

from ..model.cpu import cpu

FOLDERS = {"onnx": "onnx", "openvino": "openvino"}
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}
DEFAULT_FILES = {"onnx": "onnx/model.onnx", "openvino": "openvino/openvino_model.xml"}
INT8_FILES = {"onnx": "onnx/model_qint8_avx512_vnni.onnx", "openvino": "openvino/openvino_model_qint8_quantized.xml"}
# ONNX Runtime's int8 x int8 products saturate on CPUs without VNNI: the VNNI file gives
# vectors unrelated to fp32 there (mean cosine 0.016, measured on a Zen 3). uint8 weights do not.
ONNX_INT8_NO_VNNI = "onnx/model_quint8_avx2.onnx"
INPUT_NAMES = ("input_ids", "attention_mask")
# The published files name their output as optimum's feature-extraction export does.
OUTPUT_NAME = "last_hidden_state"
EXTRAS = {"onnx": "pip install 'sentembed[onnx]'", "openvino": "pip install 'sentembed[openvino]'"}


def int8_file(backend: str) -> str:
    """The int8 file to load or export for this CPU: the reference's published name for its class."""
    if backend == "onnx" and not cpu().vnni:
        return ONNX_INT8_NO_VNNI
    return INT8_FILES[backend]


def check_runs_here(path: Path) -> None:
    """Refuse an ONNX file quantized for VNNI on a CPU without it, instead of returning garbage."""
    if "avx512_vnni" in path.name and not cpu().vnni:
        raise ValueError(f"{path} is quantized for VNNI CPUs (int8 weights) and gives wrong vectors on this one "
                         f"({cpu().describe()}); use {ONNX_INT8_NO_VNNI} (`sentembed export --quantize int8` "
                         "writes it here) or backend='openvino'")


def available(model_dir: Path, backend: str) -> list[str]:
    """The files of this backend's kind found in the model directory, relative to it."""
    model_dir = Path(model_dir)
    suffix = SUFFIXES[backend]
    found = {p for p in model_dir.glob(f"*{suffix}")} | {p for p in (model_dir / FOLDERS[backend]).glob(f"*{suffix}")}
    return sorted(str(p.relative_to(model_dir)) for p in found if p.is_file())


def candidates(backend: str, file_name: str) -> list[str]:
    """Relative paths to try for a file_name: as given, then inside the backend's folder."""
    name = file_name.replace("\\", "/")
    folder = FOLDERS[backend]
    tries = [name]
    if not name.startswith(folder + "/"):
        tries.append(f"{folder}/{name}")
    return tries


def find(model_dir: Path, backend: str, file_name: str) -> Path | None:
    model_dir = Path(model_dir)
    for rel in candidates(backend, file_name):
        if (model_dir / rel).is_file():
            return model_dir / rel
    return None


def require(model_dir: Path, backend: str, file_name: str) -> Path:
    """The file `file_name` names, or FileNotFoundError naming the places tried and the choices."""
    if not file_name.endswith(SUFFIXES[backend]):
        raise ValueError(
            f"file_name {file_name!r} is not a {backend} file (expected a {SUFFIXES[backend]} file); "
            f"available in {model_dir}: {available(model_dir, backend) or 'none'}"
        )
    path = find(model_dir, backend, file_name)
    if path is None:
        tried = ", ".join(str(Path(model_dir) / rel) for rel in candidates(backend, file_name))
        raise FileNotFoundError(
            f"{backend} file {file_name!r} not found (looked for {tried}); "
            f"available: {available(model_dir, backend) or 'none'}; "
            f"create files with `sentembed export MODEL --format {backend} -o DIR`"
        )
    return path
