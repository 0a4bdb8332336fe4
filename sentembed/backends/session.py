"""What every swapped-in encoder shares: the MPNet call signature, its config, no saving."""
from __future__ import annotations

import threading

import torch
from torch import nn

from ..model.mpnet import MPNetConfig


class BackendRunner(nn.Module):
    """Stands where the MPNet module stood: `(input_ids, attention_mask) -> token_embeddings`.

    Keeps `config` because the Transformer module reads it (max_seq_length limits). Runs one
    call at a time: an OpenVINO request and an AOT-compiled graph (one model instance, waited
    for while holding the GIL that its int8 op needs) serve one caller, and a second thread
    calling `encode` waits here instead."""

    backend = "?"

    def __init__(self, config: MPNetConfig, source: str):
        super().__init__()
        self.config = config
        self.source = source
        self.gradient_checkpointing = False
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}  # a lock does not copy

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._lock = threading.Lock()

    def run(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and self.training:
            raise RuntimeError(f"the {self.backend} backend runs inference only; load with backend='torch' to train")
        with self._lock:  # waiting here releases the GIL
            return self.run(input_ids, attention_mask)

    def state_dict(self, *args, **kwargs):  # noqa: D102 - reached through encoder.save()
        raise RuntimeError(
            f"this encoder runs {self.source} through {self.backend} and has no torch weights to save; "
            "load the model with backend='torch' to save or fine-tune it"
        )

    def extra_repr(self) -> str:
        return f"{self.backend}: {self.source}"


def num_threads() -> int:
    """Threads for the runtime: torch's setting, which honours OMP_NUM_THREADS."""
    return max(1, torch.get_num_threads())
