"""Run an OpenVINO IR (or ONNX) file with the OpenVINO CPU plugin in place of the torch MPNet.

precision "f32" is exact (matches torch fp32 within 1e-4); "bf16" is OpenVINO's default on
CPUs with AVX-512 BF16 or AMX, and what the reference's OpenVINO backend runs there.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..model.mpnet import MPNetConfig
from .files import EXTRAS, INPUT_NAMES
from .session import BackendRunner, num_threads

def import_openvino():
    try:
        import openvino
    except ImportError as err:
        raise ImportError(f"backend='openvino' needs openvino: {EXTRAS['openvino']}") from err
    return openvino


def read_model(file: Path):
    ov = import_openvino()
    try:
        return ov.Core().read_model(str(file))
    except Exception as err:  # OpenVINO raises RuntimeError subclasses with long C++ traces
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{file} is not a readable OpenVINO model ({first}); "
                         "re-export it with `sentembed export MODEL --format openvino -o DIR`") from err


class OpenVINORunner(BackendRunner):
    backend = "openvino"

    def __init__(self, file: Path, config: MPNetConfig, precision: str | None = "f32", threads: int | None = None,
                 model=None, source: str | None = None):
        """precision: "f32", "bf16", or None for the plugin's default (bf16 where the CPU has it)."""
        super().__init__(config, source or str(file))
        ov = import_openvino()
        model = read_model(file) if model is None else model
        names = sorted({n for port in model.inputs for n in port.get_names()})
        if not set(INPUT_NAMES) <= set(names) or len(model.inputs) != len(INPUT_NAMES):
            raise ValueError(f"{file} takes inputs {names}; sentembed feeds {list(INPUT_NAMES)}")
        self.precision = precision
        properties = {
            "INFERENCE_NUM_THREADS": threads or num_threads(),
            # One request at a time, all threads on it: encode() feeds batches in sequence.
            "PERFORMANCE_HINT": "LATENCY",
        }
        if precision is not None:
            properties["INFERENCE_PRECISION_HINT"] = precision
        self.compiled = ov.Core().compile_model(model, "CPU", properties)
        self.request = self.compiled.create_infer_request()
        self.input_order = [next(p.any_name for p in model.inputs if name in p.get_names()) for name in INPUT_NAMES]

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {self.input_order[0]: input_ids.cpu().numpy(), self.input_order[1]: attention_mask.cpu().numpy()}
        result = self.request.infer(feeds)
        hidden = result[self.compiled.outputs[0]]
        # The request owns its output buffer and reuses it on the next call: copy it out.
        return torch.from_numpy(hidden.copy()).float().to(input_ids.device)

    def extra_repr(self) -> str:
        return f"openvino ({self.precision or 'default precision'}): {self.source}"
