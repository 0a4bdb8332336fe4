"""Normalize: scale each sentence embedding to unit length."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


class Normalize(nn.Module):
    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features["sentence_embedding"] = F.normalize(features["sentence_embedding"], p=2, dim=1)
        return features

    @classmethod
    def load(cls, path: Path) -> "Normalize":
        # The all-mpnet-base-v2 zip names a 2_Normalize folder it lacks: nothing to read anyway.
        return cls()

    def save(self, path: Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
