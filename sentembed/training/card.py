"""The model card (README.md) written beside a trained model, in the shape of
sentence-transformers' cards: base model, architecture, datasets (stats over the first 1,000
rows, samples), loss and its parameters, non-default hyperparameters, the training log,
evaluation results (with the run's charts) and framework versions.

    >>> write_card(Path("runs/x"), enc, cfg, datasets, loss, log, {"sts/spearman": 0.85}, 100)  # doctest: +SKIP
"""
from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from ..io import atomic_write
from .plots import TITLES


def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "-"


def _cell(x: Any, width: int = 80) -> str:
    s = str(x).replace("|", "\\|").replace("\n", " ")
    return s if len(s) <= width else s[:width - 1] + "…"


def _architecture(enc: Any) -> str:
    lines = ["SentenceTransformer("]
    for i, module in enumerate(enc.pipeline):
        desc = type(module).__name__
        if i == 0:
            cfg = module.mpnet.config
            desc += (f"({{'max_seq_length': {enc.max_seq_length}, 'architecture': 'MPNet', "
                     f"'hidden_size': {cfg.hidden_size}, 'layers': {cfg.num_hidden_layers}}})")
        elif hasattr(module, "config_dict"):
            desc += f"({module.config_dict()})"
        lines.append(f"  ({i}): {desc}")
    lines.append(")")
    return "\n".join(lines)


def _cross_encoder_details(enc: Any, base: str, names: list[str]) -> list[str]:
    """Model details and usage of a cross-encoder (a reranker): pairs in, scores out."""
    cfg = enc.pipeline.transformer.mpnet.config
    return ["## Model Details", "",
            f"- **Model type:** Cross Encoder (MPNetForSequenceClassification, {cfg.num_hidden_layers} layers, "
            f"hidden size {cfg.hidden_size})",
            f"- **Base model:** `{base}`",
            f"- **Maximum sequence length:** {enc.max_seq_length} tokens",
            f"- **Number of output labels:** {enc.num_labels}; activation `{enc.activation}`",
            f"- **Training datasets:** {', '.join(names)}", "",
            "## Usage", "", "```python", "from sentence_transformers import CrossEncoder", "",
            'model = CrossEncoder("path/to/this/model")',
            'scores = model.predict([("How many people live in Berlin?", "Berlin has 3.5 million people.")])',
            "```", "", "or with sentembed:", "", "```python", "import sentembed", "",
            'reranker = sentembed.load_cross_encoder("path/to/this/model")',
            'reranker.rank("How many people live in Berlin?", documents, top_k=10)', "```", ""]


def render_card(enc: Any, cfg: Any, datasets: Sequence[Any], loss: Any, log: list[dict],
                eval_results: dict[str, float], total_steps: int, plots: Sequence[str] = ()) -> str:
    """The card's markdown text; `plots` are chart files beside the card (plots.py) it shows."""
    base = cfg.model
    title = cfg.model_name or f"{Path(base).name} fine-tuned with sentembed"
    names = [ds.name for ds in datasets]
    reranker = hasattr(enc, "num_labels")
    task = ("text-ranking", "- cross-encoder", "It scores how well a text answers a query (a reranker).") if reranker \
        else ("sentence-similarity", "- sentence-similarity", "It maps sentences and paragraphs to a "
              f"{enc.dimension}-dimensional dense vector space.")
    out = ["---", "library_name: sentence-transformers", f"pipeline_tag: {task[0]}",
           "tags:", "- sentence-transformers", task[1], "- feature-extraction", "- sentembed",
           f"base_model: {base}", "datasets:", *[f"- {n}" for n in names], "---", "",
           f"# {title}", "",
           f"This is a [sentence-transformers](https://www.SBERT.net) model fine-tuned from `{base}` with "
           f"sentembed on {len(datasets)} dataset(s). {task[2]}", "",
           *(_cross_encoder_details(enc, base, names) if reranker else [
           "## Model Details", "",
           f"- **Base model:** `{base}`",
           f"- **Maximum sequence length:** {enc.max_seq_length} tokens",
           f"- **Output dimensionality:** {enc.dimension}",
           f"- **Similarity function:** {enc.similarity_fn_name}",
           f"- **Training datasets:** {', '.join(names)}", "",
           "### Full Model Architecture", "", "```", _architecture(enc), "```", "",
           "## Usage", "", "```python", "from sentence_transformers import SentenceTransformer", "",
           'model = SentenceTransformer("path/to/this/model")',
           'embeddings = model.encode(["The weather is lovely today.", "It is sunny outside!"])',
           "```", "", "or with sentembed:", "", "```python", "import sentembed", "",
           'model = sentembed.load("path/to/this/model")', "```", ""]),
           "## Training Details", "", "### Training Datasets", ""]
    for ds in datasets:
        st = ds.stats(1000, count=getattr(enc, "count_tokens", None))
        u = st["unit"]
        out += [f"#### {ds.name}", "",
                f"- Size: {st['rows']:,} training rows; sampling weight {st['weight']:g}",
                "- Approximate statistics based on the first 1000 samples:", "",
                f"| column | min {u} | mean {u} | max {u} |", "|---|---|---|---|"]
        out += [f"| {i} | {c['min']} | {c['mean']} | {c['max']} |" for i, c in enumerate(st["columns"])]
        if "label" in st:
            out += [f"| label | {st['label']['min']} | {st['label']['mean']} | {st['label']['max']} |"]
        out += ["", "- Samples:", "", "| " + " | ".join(f"column {i}" for i in range(len(st["samples"][0]))) + " |",
                "|" + "---|" * len(st["samples"][0])]
        out += ["| " + " | ".join(_cell(x) for x in s) + " |" for s in st["samples"]]
        out += [""]
    loss_params = loss.params()
    out += [f"- Loss: `{type(loss).__name__}` with these parameters:", "", "```json",
            json.dumps(loss_params, indent=2), "```", "",
            "### Training Hyperparameters", "", "#### Non-Default Hyperparameters", ""]
    out += [f"- `{k}`: {v}" for k, v in cfg.non_defaults().items()]
    out += ["", "#### All Hyperparameters", "", "<details><summary>Click to expand</summary>", ""]
    out += [f"- `{k}`: {v}" for k, v in cfg.to_dict().items() if k != "datasets"]
    out += ["", "</details>", "", "### Training Logs", ""]
    evals = {e["step"]: e["eval"] for e in log if "eval" in e}
    eval_keys = sorted({k for r in evals.values() for k in r if k != "primary"})
    out += ["| Step | Training Loss | " + " | ".join(eval_keys) + (" |" if eval_keys else ""),
            "|---|---|" + "---|" * len(eval_keys)]
    for e in log:
        if "loss" in e:
            ev = evals.get(e["step"], {})
            cells = [f"{ev[k]:.4f}" if k in ev else "-" for k in eval_keys]
            out.append(f"| {e['step']} | {e['loss']:.4f} | " + " | ".join(cells) + (" |" if cells else ""))
    out += ["", f"Total steps: {total_steps}.", ""]
    out += [line for name in plots for line in (f"![{TITLES.get(name, name)}]({name})", "")]
    if eval_results:
        out += ["## Evaluation", "", "| metric | value |", "|---|---|"]
        out += [f"| {k} | {v:.4f} |" for k, v in eval_results.items() if k != "primary"]
        out += [""]
    out += ["### Framework Versions", "",
            f"- Python: {platform.python_version()}",
            f"- sentembed: {_version('sentembed')}",
            f"- PyTorch: {_version('torch')}",
            f"- tokenizers: {_version('tokenizers')}",
            f"- safetensors: {_version('safetensors')}", "",
            "## Citation", "", "```bibtex",
            "@inproceedings{reimers-2019-sentence-bert,",
            '    title = "Sentence-BERT: Sentence Embeddings using Siamese BERT-Networks",',
            '    author = "Reimers, Nils and Gurevych, Iryna",',
            '    booktitle = "Proceedings of EMNLP-IJCNLP 2019",', "    year = \"2019\",", "}", "```", ""]
    return "\n".join(out)


def write_card(path: Path, enc: Any, cfg: Any, datasets: Sequence[Any], loss: Any, log: list[dict],
               eval_results: dict[str, float], total_steps: int, plots: Sequence[str] = ()) -> Path:
    """Write README.md into the model directory `path` and return its path."""
    card = Path(path) / "README.md"
    with atomic_write(card, "w") as f:
        f.write(render_card(enc, cfg, datasets, loss, log, eval_results, total_steps, plots))
    return card
