"""Dense: a linear layer with an activation on the sentence embedding."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .files import read_json, write_json
from .weights import WeightsError, check_finite, read_weights, write_weights

# Activations by the names the reference writes; a closed list, so a config never imports code.
ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
}


def _activation_name(activation: nn.Module) -> str:
    for name, kind in ACTIVATIONS.items():
        if type(activation) is kind:
            return name
    raise ValueError(f"activation {type(activation).__name__} cannot be saved; use one of {list(ACTIVATIONS)}")


class Dense(nn.Module):
    config_file = "config.json"

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: nn.Module | None = None):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.activation = activation if activation is not None else nn.Tanh()

    @property
    def output_dimension(self) -> int:
        return self.linear.out_features

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features["sentence_embedding"] = self.activation(self.linear(features["sentence_embedding"]))
        return features

    @classmethod
    def load(cls, path: Path) -> "Dense":
        path = Path(path)
        config = read_json(path / cls.config_file)
        name = config.get("activation_function", "torch.nn.modules.activation.Tanh")
        if name not in ACTIVATIONS:
            raise ValueError(f"{path / cls.config_file}: activation {name!r} is not supported; valid: {list(ACTIVATIONS)}")
        dense = cls(int(config["in_features"]), int(config["out_features"]), bool(config.get("bias", True)), ACTIVATIONS[name]())
        state, source = read_weights(path)
        try:
            dense.load_state_dict(state)
        except RuntimeError as err:
            raise WeightsError(f"{source} does not fit the Dense layer in {path / cls.config_file}: {err}") from err
        check_finite(state, source)
        return dense

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        write_json(path / self.config_file, {
            "in_features": self.linear.in_features,
            "out_features": self.linear.out_features,
            "bias": self.linear.bias is not None,
            "activation_function": _activation_name(self.activation),
        })
        write_weights(self.state_dict(), path / "model.safetensors")
