"""What every loaded model shares, the bi-encoder and the cross-encoder alike: its module on a
device, in a dtype chosen for the CPU, its token window and its tokenizer."""
from __future__ import annotations

import torch

from .model.cpu import choose_dtype

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# On CPU a batch's activations should stay in cache: batches of about 512 tokens were the
# fastest on 2 EPYC cores, for sentences and documents alike (benchmarks/RESULTS.md). A runtime may
# ask for its own (`cpu_token_budget`: on AMX, int8 and bf16 do). GPUs want large batches.
CPU_TOKEN_BUDGET = 512


class LoadedModel:
    """What the bi-encoder and the cross-encoder share: their module on a device, in a dtype
    (`dtype="auto"` picks by CPU and device: model/cpu.py), its token window and tokenizer.

    cast=False leaves the module in float32 where it is: for a backend about to replace its
    MPNet, which reads the float32 weights (casting 110M weights first would be wasted)."""

    def __init__(self, pipeline: torch.nn.Module, name: str, device: torch.device | str | None, dtype: str | None,
                 cast: bool = True):
        self.pipeline = pipeline.eval()
        self.name = name
        self.device = torch.device(device or "cpu")
        self.dtype = choose_dtype(dtype, self.device.type)
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; valid: {', '.join(DTYPES)}, auto")
        if self.dtype == "float16" and self.device.type == "cpu":
            raise ValueError("float16 is not supported on CPU; use dtype='bfloat16' or a CUDA device")
        if cast:
            self.pipeline.to(self.device, DTYPES[self.dtype])

    @property
    def max_seq_length(self) -> int:
        return self.pipeline.transformer.max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        self.pipeline.transformer.max_seq_length = value

    def token_budget(self, batch_size: int) -> int:
        """Tokens one padded forward pass holds: on CPU what the runtime asks for (else
        CPU_TOKEN_BUDGET), elsewhere batch_size full windows."""
        if self.device.type != "cpu":
            return batch_size * self.max_seq_length
        return getattr(self.pipeline.transformer.mpnet, "cpu_token_budget", None) or CPU_TOKEN_BUDGET

    @property
    def tokenizer(self):
        return self.pipeline.transformer.tokenizer
