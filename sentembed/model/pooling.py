"""Pooling: token embeddings to one sentence embedding, in the reference's modes.

Several modes concatenate in the order given. With include_prompt false, the prompt's
tokens are left out of the pool (features["prompt_length"] says how many)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from .files import read_json, write_json

MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
_LEGACY_KEYS = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}


class Pooling(nn.Module):
    config_file = "config.json"

    def __init__(self, dimension: int, modes: str | list[str] = "mean", include_prompt: bool = True):
        super().__init__()
        modes = [modes] if isinstance(modes, str) else list(modes)
        unknown = [m for m in modes if m not in MODES]
        if unknown or not modes:
            raise ValueError(f"unknown pooling mode(s) {unknown or modes}; valid: {', '.join(MODES)}")
        self.dimension = dimension
        self.modes = modes
        self.include_prompt = include_prompt

    @property
    def output_dimension(self) -> int:
        return self.dimension * len(self.modes)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        tokens = features["token_embeddings"]
        full_mask = features["attention_mask"]
        mask = full_mask
        prompt_length = int(features.get("prompt_length", 0) or 0)
        if prompt_length and not self.include_prompt:
            mask = mask.clone()
            mask[:, :prompt_length] = 0
        accumulate = torch.float32 if tokens.dtype in (torch.float16, torch.bfloat16) else tokens.dtype
        pooled = []
        for mode in self.modes:
            if mode == "cls":
                first = mask.int().argmax(dim=1)
                pooled.append(tokens[torch.arange(tokens.shape[0], device=tokens.device), first])
            elif mode == "max":
                pooled.append(tokens.masked_fill(mask[..., None] == 0, float("-inf")).max(dim=1).values)
            elif mode in ("mean", "mean_sqrt_len_tokens"):
                weights = mask[..., None].to(tokens.dtype)
                total = (tokens * weights).sum(dim=1, dtype=accumulate)
                count = torch.clamp(weights.sum(dim=1, dtype=accumulate), min=1e-9)
                pooled.append((total / (count if mode == "mean" else count.sqrt())).to(tokens.dtype))
            elif mode == "weightedmean":
                weights = torch.arange(1, tokens.shape[1] + 1, device=tokens.device, dtype=accumulate)[None, :, None]
                weights = mask[..., None].to(accumulate) * weights
                total = (tokens * weights).sum(dim=1)
                pooled.append((total / torch.clamp(weights.sum(dim=1), min=1e-9)).to(tokens.dtype))
            else:  # lasttoken: the last position the mask keeps
                length = tokens.shape[1]
                seen, from_end = mask.flip(1).max(dim=1)
                last = torch.where(seen == 0, length - 1, length - 1 - from_end)
                kept = tokens * mask[..., None].to(tokens.dtype)
                pooled.append(kept[torch.arange(tokens.shape[0], device=tokens.device), last])
        features["sentence_embedding"] = torch.cat(pooled, dim=-1)
        return features

    @classmethod
    def load(cls, path: Path) -> "Pooling":
        config = read_json(Path(path) / cls.config_file)
        dimension = config.get("embedding_dimension", config.get("word_embedding_dimension"))
        if dimension is None:
            raise ValueError(f"{Path(path) / cls.config_file} names no embedding dimension")
        modes = config.get("pooling_mode")
        if modes is None:
            modes = [mode for key, mode in _LEGACY_KEYS.items() if config.get(key)] or ["mean"]
        return cls(int(dimension), modes, bool(config.get("include_prompt", True)))

    def save(self, path: Path) -> None:
        # The legacy keys: every sentence-transformers release reads them.
        config = {"word_embedding_dimension": self.dimension}
        config.update({key: mode in self.modes for key, mode in _LEGACY_KEYS.items()})
        config["include_prompt"] = self.include_prompt
        write_json(Path(path) / self.config_file, config)
