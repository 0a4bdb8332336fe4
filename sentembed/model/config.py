"""MPNet's configuration, as config.json holds it, checked field by field when it is read.

    config = MPNetConfig.from_dict(json.load(open("config.json")), source="model/config.json")
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields


_POSITIVE_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                  "max_position_embeddings", "relative_attention_num_buckets")


@dataclass
class MPNetConfig:
    vocab_size: int = 30527
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 514
    relative_attention_num_buckets: int = 32
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2
    initializer_range: float = 0.02

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> "MPNetConfig":
        """The config of a config.json's contents; a bad value is a one-line ValueError naming
        `source` and the field, never a ZeroDivisionError deep in the model."""
        if not isinstance(raw, dict):
            raise ValueError(f"{source} must hold a JSON object, got {type(raw).__name__}")
        model_type = raw.get("model_type", "mpnet")
        if model_type != "mpnet":
            raise ValueError(f"{source} describes a {model_type!r} model; sentembed runs MPNet only")
        known = {f.name for f in fields(cls)}
        config = cls(**{k: v for k, v in raw.items() if k in known})
        config.check(source)
        return config

    def check(self, source: str = "config.json") -> None:
        """Every field of the right type and range: ValueError("config.json: FIELD ...") if not."""
        def bad(field: str, wanted: str) -> ValueError:
            return ValueError(f"{source}: {field} must be {wanted}, got {getattr(self, field)!r}")

        for field in _POSITIVE_INTS:
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad(field, "a positive integer")
        for field in ("pad_token_id", "bos_token_id", "eos_token_id"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < self.vocab_size:
                raise bad(field, f"a token id from 0 to vocab_size - 1 ({self.vocab_size - 1})")
        for field, low, high in (("hidden_dropout_prob", 0, 1), ("attention_probs_dropout_prob", 0, 1),
                                 ("layer_norm_eps", 0, 1), ("initializer_range", 0, math.inf)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
                raise bad(field, f"a number in [{low}, {high})")
        if self.layer_norm_eps == 0:
            raise bad("layer_norm_eps", "more than 0")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{source}: hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.max_position_embeddings < self.pad_token_id + 3:  # positions start at pad_token_id + 1
            raise bad("max_position_embeddings", f"at least pad_token_id + 3 ({self.pad_token_id + 3})")
        if self.hidden_act != "gelu":
            raise ValueError(f"{source}: hidden_act {self.hidden_act!r} is not supported; MPNet uses 'gelu'")

    def to_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out.update(model_type="mpnet", architectures=["MPNetModel"])
        return out
