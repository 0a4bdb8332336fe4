"""Run an ONNX file with ONNX Runtime in place of the torch MPNet."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..model.mpnet import MPNetConfig
from .files import EXTRAS, INPUT_NAMES
from .session import BackendRunner, num_threads


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError as err:
        raise ImportError(f"backend='onnx' needs onnxruntime: {EXTRAS['onnx']}") from err
    return onnxruntime


class OnnxRunner(BackendRunner):
    backend = "onnx"

    def __init__(self, file: Path, config: MPNetConfig, threads: int | None = None, source: str | None = None):
        super().__init__(config, source or str(file))
        ort = import_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(file), options, providers=["CPUExecutionProvider"])
        except Exception as err:  # ORT raises its own exception types for bad protobufs
            raise ValueError(f"{file} is not a valid ONNX model ({type(err).__name__}: {err}); "
                             "re-export it with `sentembed export MODEL --format onnx -o DIR`") from err
        names = [i.name for i in self.session.get_inputs()]
        missing = [n for n in INPUT_NAMES if n not in names]
        extra = [n for n in names if n not in INPUT_NAMES]
        if missing or extra:
            raise ValueError(f"{file} takes inputs {names}; sentembed feeds {list(INPUT_NAMES)}")
        self.output = self.session.get_outputs()[0].name

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        feeds = {"input_ids": input_ids.cpu().numpy().astype(np.int64, copy=False),
                 "attention_mask": attention_mask.cpu().numpy().astype(np.int64, copy=False)}
        (hidden,) = self.session.run([self.output], feeds)
        return torch.from_numpy(hidden).to(input_ids.device)
