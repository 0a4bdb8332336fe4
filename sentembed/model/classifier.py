"""The cross-encoder's saved model: MPNet with a classification head on the first token,
read from and written to sentence-transformers' CrossEncoder directories.

    model = CrossEncoderModel.load(path)
    features = model.tokenize_pairs([("a query", "a document")])
    logits = model(features)["scores"]              # (pairs, num_labels), before the activation

The head is transformers' `MPNetClassificationHead`: dropout, dense, tanh, dropout, out_proj,
on the `<s>` token. The directory is `MPNetForSequenceClassification` (config.json with
`architectures`, `id2label`; weights under `mpnet.` and `classifier.`) plus the reference's
files: modules.json with one Transformer and config_sentence_transformers.json with
`model_type: CrossEncoder` and the activation (sentence-transformers 6), and the activation
again in config.json's `sentence_transformers` key (versions 4 and 5 read it there).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..io import atomic_dir
from .files import read_json, write_json
from .mpnet import MPNetConfig
from .transformer import Transformer
from .weights import WeightsError, check_finite, read_weights, write_weights

ARCHITECTURE = "MPNetForSequenceClassification"
# The activations the reference saves by class path, and the ones it picks when none is saved.
ACTIVATIONS: dict[str, nn.Module] = {
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid(),
    "torch.nn.modules.linear.Identity": nn.Identity(),
    "torch.nn.modules.activation.Tanh": nn.Tanh(),
}
SIGMOID, IDENTITY = "torch.nn.modules.activation.Sigmoid", "torch.nn.modules.linear.Identity"
_ST_TRANSFORMER = "sentence_transformers.base.modules.transformer.Transformer"
_ST_MODULE_CONFIG = {"transformer_task": "sequence-classification",
                     "modality_config": {"text": {"method": "forward", "method_output_name": "logits"}},
                     "module_output_name": "scores"}


class ModelKindError(ValueError):
    """A directory holds the other kind of model (a bi-encoder where a cross-encoder was asked, or back)."""


def model_kind(path: str | Path) -> tuple[str, str]:
    """("cross-encoder" | "bi-encoder" | "plain", what in the directory says so).

    >>> model_kind("runs/reranker")          # doctest: +SKIP
    ('cross-encoder', 'config_sentence_transformers.json model_type CrossEncoder')
    """
    path = Path(path)
    st_config = path / "config_sentence_transformers.json"
    if st_config.is_file() and read_json(st_config).get("model_type") == "CrossEncoder":
        return "cross-encoder", f"{st_config.name} model_type 'CrossEncoder'"
    modules = path / "modules.json"
    if modules.is_file():
        entries = read_json(modules)
        names = [str(e.get("type", "")).rsplit(".", 1)[-1] for e in entries if isinstance(e, dict)] \
            if isinstance(entries, list) else []
        if "Pooling" in names:
            return "bi-encoder", f"modules.json with the modules {', '.join(names)}"
    config = path / "config.json"
    if config.is_file():
        architectures = read_json(config).get("architectures") or []
        if any(str(a).endswith("ForSequenceClassification") for a in architectures):
            return "cross-encoder", f"config.json architectures {architectures}"
        return "plain", f"config.json architectures {architectures or 'unnamed'}"
    return "plain", "no config.json"


class ClassificationHead(nn.Module):
    """transformers' MPNetClassificationHead: logits from the first token's embedding."""

    def __init__(self, hidden_size: int, num_labels: int, dropout: float = 0.1):
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden_size, num_labels)

    def forward(self, token_embeddings: torch.Tensor) -> torch.Tensor:
        x = self.dropout(token_embeddings[:, 0, :])          # (batch, hidden): the <s> token
        x = torch.tanh(self.dense(x.to(self.dense.weight.dtype)))
        return self.out_proj(self.dropout(x))                # (batch, num_labels)


class CrossEncoderModel(nn.Module):
    """Transformer (tokenizer + MPNet) and ClassificationHead; `id2label` and the activation's
    class path ride along for saving."""

    def __init__(self, transformer: Transformer, head: ClassificationHead, id2label: dict[int, str],
                 activation: str | None = None, extra_config: dict | None = None):
        super().__init__()
        self.transformer = transformer
        self.head = head
        self.id2label = dict(id2label)
        self.activation_name = activation or (SIGMOID if len(self.id2label) == 1 else IDENTITY)
        if self.activation_name not in ACTIVATIONS:
            raise ValueError(f"activation {self.activation_name!r} is not supported; sentembed knows {list(ACTIVATIONS)}")
        self.extra_config = dict(extra_config or {})

    @property
    def num_labels(self) -> int:
        return self.head.out_proj.out_features

    @property
    def activation(self) -> nn.Module:
        return ACTIVATIONS[self.activation_name]

    def tokenize_pairs(self, pairs: list[tuple[str, str]], device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
        """Padded features of (query, document) pairs in the tokenizer's pair template."""
        return self.transformer.tokenizer.pad(self.transformer.tokenizer.pair_ids(pairs), device)

    def forward(self, features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        features = self.transformer(features)
        features["scores"] = self.head(features["token_embeddings"])
        return features

    # -- files -------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "CrossEncoderModel":
        """Read a CrossEncoder directory; a bi-encoder or a model without a head is refused."""
        path = Path(path)
        kind, evidence = model_kind(path)
        if kind == "bi-encoder":
            raise ModelKindError(f"{path} holds a bi-encoder ({evidence}), not a cross-encoder: load it with "
                                 "sentembed.load, or start a cross-encoder from it with CrossEncoder.from_encoder")
        if kind != "cross-encoder":
            raise ModelKindError(f"{path} has no classification head ({evidence}); expected {ARCHITECTURE}. "
                                 "CrossEncoder.from_encoder starts a cross-encoder from it with a fresh head")
        raw = read_json(path / "config.json")
        state, source = read_weights(path)
        transformer = Transformer.load(path, weights=(state, source))
        head = ClassificationHead(transformer.dimension, len(_id2label(raw)), raw.get("hidden_dropout_prob", 0.1))
        wanted = {f"classifier.{k}": v for k, v in head.state_dict().items()}
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise WeightsError(f"{source} lacks the classification head ({', '.join(missing)})")
        for name, tensor in wanted.items():
            if state[name].shape != tensor.shape:
                raise WeightsError(f"{source}: {name!r} has shape {tuple(state[name].shape)}, "
                                   f"config.json implies {tuple(tensor.shape)}")
        head.load_state_dict({k.removeprefix("classifier."): state[k] for k in wanted})
        check_finite(head.state_dict(), source)
        extra = {k: raw[k] for k in ("label2id", "problem_type") if k in raw}
        return cls(transformer, head, _id2label(raw), _saved_activation(path, raw), extra).eval()

    def save(self, path: str | Path, versions: dict[str, str]) -> None:
        """Write the directory atomically, in the layout sentence-transformers 4 to 6 read."""
        with atomic_dir(path) as staging:
            config = self.transformer.mpnet.config
            write_json(staging / "config.json", {
                **self.extra_config, **config.to_dict(), "architectures": [ARCHITECTURE],
                "id2label": {str(i): label for i, label in self.id2label.items()},
                "label2id": {label: i for i, label in self.id2label.items()},
                "sentence_transformers": {"activation_fn": self.activation_name,
                                          "version": versions.get("sentence_transformers", "")},
            })
            state = {f"mpnet.{k}": v for k, v in self.transformer.mpnet.state_dict().items()}
            state.update({f"classifier.{k}": v for k, v in self.head.state_dict().items()})
            write_weights({k: v.float() for k, v in state.items()}, staging / "model.safetensors")
            self.transformer.save_tokenizer(staging)
            write_json(staging / "sentence_bert_config.json", {
                "max_seq_length": self.transformer.max_seq_length, "do_lower_case": self.transformer.do_lower_case,
                **_ST_MODULE_CONFIG})
            write_json(staging / "modules.json", [{"idx": 0, "name": "0", "path": "", "type": _ST_TRANSFORMER}])
            write_json(staging / "config_sentence_transformers.json", {
                "__version__": versions, "model_type": "CrossEncoder", "activation_fn": self.activation_name,
                "prompts": {}, "default_prompt_name": None})

    @classmethod
    def from_transformer(cls, transformer: Transformer, num_labels: int = 1, activation: str | None = None,
                         seed: int | None = None) -> "CrossEncoderModel":
        """A fresh head (initialised as transformers does: normal(0, 0.02), zero biases) on an encoder."""
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        config: MPNetConfig = transformer.mpnet.config
        head = ClassificationHead(config.hidden_size, num_labels, config.hidden_dropout_prob)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        for linear in (head.dense, head.out_proj):
            nn.init.normal_(linear.weight, std=config.initializer_range, generator=generator)
            nn.init.zeros_(linear.bias)
        return cls(transformer, head, {i: f"LABEL_{i}" for i in range(num_labels)}, activation)


def _id2label(raw: dict) -> dict[int, str]:
    labels = raw.get("id2label")
    if labels:
        return {int(i): str(label) for i, label in sorted(labels.items(), key=lambda kv: int(kv[0]))}
    count = int(raw.get("num_labels", 2))   # transformers' PretrainedConfig default is 2
    return {i: f"LABEL_{i}" for i in range(count)}


def _saved_activation(path: Path, raw: dict) -> str | None:
    """The activation as the reference finds it: config_sentence_transformers.json (6.x),
    config.json's sentence_transformers key (4.x, 5.x), sbert_ce_default_activation_function (older)."""
    st_config = path / "config_sentence_transformers.json"
    found = read_json(st_config).get("activation_fn") if st_config.is_file() else None
    found = found or (raw.get("sentence_transformers") or {}).get("activation_fn")
    found = found or raw.get("sbert_ce_default_activation_function")
    if found is not None and found not in ACTIVATIONS:
        raise ValueError(f"{path}: activation {found!r} is not supported; sentembed knows {list(ACTIVATIONS)}")
    return found
