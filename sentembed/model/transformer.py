"""The Transformer module: tokenizer + MPNet, the first module of every pipeline."""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import nn

from .files import read_json, write_json
from .mpnet import MPNet, MPNetConfig
from .tokenizer import Tokenizer
from .weights import WeightsError, check_finite, read_weights, write_weights

# Checkpoint entries that are not part of the encoder: buffers, the pooler, MLM heads.
_IGNORED_PREFIXES = ("pooler.", "lm_head.", "embeddings.position_ids")


def _encoder_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a checkpoint's names onto ours: MPNetForMaskedLM nests the encoder under `mpnet.`."""
    if any(k.startswith("mpnet.") for k in state):
        state = {k[len("mpnet."):]: v for k, v in state.items() if k.startswith("mpnet.")}
    return {k: v for k, v in state.items() if not k.startswith(_IGNORED_PREFIXES)}


class Transformer(nn.Module):
    """Token ids to token embeddings; owns the tokenizer and the maximum sequence length."""

    config_file = "sentence_bert_config.json"

    def __init__(self, mpnet: MPNet, tokenizer: Tokenizer, max_seq_length: int, do_lower_case: bool = False):
        super().__init__()
        self.mpnet = mpnet  # our MPNet, or a runtime that stands in for it (backends/)
        self.tokenizer = tokenizer
        self.do_lower_case = do_lower_case
        self.max_seq_length = max_seq_length

    @property
    def max_seq_length(self) -> int:
        return self._max_seq_length

    @max_seq_length.setter
    def max_seq_length(self, value: int) -> None:
        # Positions 0 and 1 are reserved (padding_idx + 1 is the first real position).
        limit = self.mpnet.config.max_position_embeddings - self.mpnet.config.pad_token_id - 1
        if not 2 <= value <= limit:
            raise ValueError(f"max_seq_length must be between 2 and {limit} for this model, got {value}")
        self._max_seq_length = value
        self.tokenizer.set_max_length(value)

    @property
    def dimension(self) -> int:
        return self.mpnet.config.hidden_size

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features["token_embeddings"] = self.mpnet(features["input_ids"], features["attention_mask"])
        return features

    @classmethod
    def load(cls, path: Path, max_seq_length: int | None = None,
             weights: tuple[dict[str, torch.Tensor], Path] | None = None) -> "Transformer":
        """The transformer in `path`; `weights` is read_weights(path) where the caller has it."""
        path = Path(path)
        module_config = read_json(path / cls.config_file) if (path / cls.config_file).is_file() else {}
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} is missing: not a Hugging Face model directory")
        config = MPNetConfig.from_dict(read_json(config_file), source=str(config_file))
        if max_seq_length is None:
            max_seq_length = module_config.get("max_seq_length") or _tokenizer_max_length(path)
        if max_seq_length is None:
            max_seq_length = config.max_position_embeddings - config.pad_token_id - 1
        mpnet = MPNet.for_checkpoint(config)
        state, source = weights or read_weights(path)
        load_encoder_state(mpnet, _encoder_state(state), source, config_file)
        check_finite(mpnet.state_dict(), source)
        do_lower_case = bool(module_config.get("do_lower_case", False))
        tokenizer = Tokenizer.from_dir(path, max_seq_length, do_lower_case)
        return cls(mpnet, tokenizer, max_seq_length, do_lower_case).eval()

    def save(self, path: Path) -> None:
        path = Path(path)
        write_json(path / "config.json", self.mpnet.config.to_dict())
        write_weights(self.mpnet.state_dict(), path / "model.safetensors")
        self.save_tokenizer(path)
        write_json(path / self.config_file, {"max_seq_length": self.max_seq_length, "do_lower_case": self.do_lower_case})

    def save_tokenizer(self, path: Path) -> None:
        """tokenizer.json and tokenizer_config.json (the cross-encoder's directory has them too)."""
        path = Path(path)
        self.tokenizer.save(path)
        write_json(path / "tokenizer_config.json", {
            "tokenizer_class": "MPNetTokenizer", "do_lower_case": True, "model_max_length": self.max_seq_length,
            "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>",
            "unk_token": "[UNK]", "pad_token": "<pad>", "mask_token": "<mask>",
        })


def _tokenizer_max_length(path: Path) -> int | None:
    """Newer sentence-transformers keep max_seq_length as the tokenizer's model_max_length."""
    file = path / "tokenizer_config.json"
    if not file.is_file():
        return None
    value = read_json(file).get("model_max_length")
    return int(value) if isinstance(value, (int, float)) and value < 100_000 else None


_LAYER = re.compile(r"encoder\.layer\.(\d+)\.")


def _layers(names: Iterable[str]) -> int:
    return len({int(m.group(1)) for m in map(_LAYER.match, names) if m})


def _field_of(name: str, dim: int) -> str:
    """The config field that sets dimension `dim` of the encoder tensor `name`."""
    if name == "embeddings.word_embeddings.weight":
        return ("vocab_size", "hidden_size")[dim]
    if name == "embeddings.position_embeddings.weight":
        return ("max_position_embeddings", "hidden_size")[dim]
    if name == "encoder.relative_attention_bias.weight":
        return ("relative_attention_num_buckets", "num_attention_heads")[dim]
    if ".intermediate.dense." in name:
        return ("intermediate_size", "hidden_size")[dim]
    if ".output.dense.weight" in name and dim == 1:
        return "intermediate_size"
    return "hidden_size"


def load_encoder_state(encoder: MPNet, state: dict[str, torch.Tensor], source: Path,
                       config_file: Path | str = "config.json") -> None:
    """Load a checkpoint's encoder tensors, which must match the config exactly: a layer more
    or less, or a size that differs, is a WeightsError naming config.json and the field (a
    config with fewer layers than its checkpoint would otherwise load a part silently)."""
    expected = encoder.state_dict()
    config = encoder.config
    have, want = _layers(state), config.num_hidden_layers
    if have and have != want:  # none at all: not MPNet, said below
        raise WeightsError(f"{config_file}: num_hidden_layers is {want}, but {source} holds {have} layers; "
                           "the config does not belong to these weights")
    missing = sorted(set(expected) - set(state))
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise WeightsError(f"{source} lacks {len(missing)} encoder tensors ({shown}); is it an MPNet checkpoint?")
    for name, tensor in expected.items():
        got = tuple(state[name].shape)
        if got != tuple(tensor.shape):
            dim = next((d for d, (a, b) in enumerate(zip(got, tensor.shape)) if a != b), 0)
            field = _field_of(name, dim) if len(got) == tensor.dim() else "hidden_size"
            raise WeightsError(
                f"{config_file}: {field} is {getattr(config, field)}, but {source} holds tensor {name!r} of shape "
                f"{got} where the config implies {tuple(tensor.shape)}"
            )
    tensors = {k: state[k] for k in expected}
    without_weights = any(t.is_meta for t in expected.values())  # MPNet.for_checkpoint
    if without_weights:  # the checkpoint's tensors become the weights, in the model's dtype
        tensors = {k: t.to(expected[k].dtype).contiguous() for k, t in tensors.items()}
    encoder.load_state_dict(tensors, assign=without_weights)
