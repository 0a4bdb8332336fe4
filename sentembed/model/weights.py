"""Reading and writing weight files: safetensors, never unpickled data.

Every failure names the file, so a truncated download is never a silently wrong model."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..io import atomic_write


class WeightsError(ValueError):
    """A weight file that cannot be read or does not fit the model."""


def read_weights(directory: Path) -> tuple[dict[str, torch.Tensor], Path]:
    """The state dict in `directory`: model.safetensors, else pytorch_model.bin (weights only)."""
    directory = Path(directory)
    safetensors_file = directory / "model.safetensors"
    if safetensors_file.is_file():
        try:
            return load_file(str(safetensors_file)), safetensors_file
        except (SafetensorError, OSError, ValueError) as err:
            raise WeightsError(
                f"{safetensors_file} is truncated or corrupt ({err}); delete it and download the model again"
            ) from err
    bin_file = directory / "pytorch_model.bin"
    if bin_file.is_file():
        try:
            return torch.load(bin_file, map_location="cpu", weights_only=True), bin_file
        except Exception as err:  # torch raises many kinds here; all mean the same to the user
            raise WeightsError(
                f"{bin_file} cannot be read as plain weights ({err}); sentembed never unpickles code"
            ) from err
    raise WeightsError(f"no weights in {directory}: expected model.safetensors or pytorch_model.bin")


def check_finite(state: dict[str, torch.Tensor], source: Path) -> None:
    """Corrupt bytes inside a well-formed file usually decode to inf or NaN somewhere."""
    for name, tensor in state.items():
        # Any inf or NaN element makes the sum inf or NaN, so a finite sum clears the tensor at a
        # tenth of the cost of checking every element; only a sum that is not is looked at whole.
        if tensor.is_floating_point() and not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():
            raise WeightsError(f"{source}: tensor {name!r} holds NaN or inf values; the file is corrupt")


def write_weights(state: dict[str, torch.Tensor], file: Path) -> None:
    """Write a safetensors file atomically: a reader sees the old file or the new, never half."""
    file = Path(file)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    with atomic_write(file) as out:
        save_file(tensors, out.name, metadata={"format": "pt"})  # safetensors writes by file name
