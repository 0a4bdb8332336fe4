"""`sentembed train CONFIG.yaml [--field value ...]`: every TrainConfig field is also a flag
(lists and dicts as JSON), and a flag wins over the file. `sentembed mine-negatives PAIRS -o OUT`.

    sentembed train examples/train_scifact.yaml --max-steps 100 --precision bf16
    sentembed mine-negatives pairs.jsonl -o triplets.jsonl --corpus corpus.jsonl --relative-margin 0.05
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer

from ..backends.options import dtype_option, quantize_option


def _flag_type(tp: Any) -> Any:
    # Typer wants plain scalars; structures travel as JSON strings.
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    if base in (int, float, bool, str):
        return Optional[base]
    return Optional[str]


# Set by the top-level command line, which may import search: opens an Index for
# `mine-negatives --index` (training itself never imports search).
open_index: Any = None


def mine_negatives(
    pairs: Path = typer.Argument(..., help="(query, positive) pairs: JSONL, CSV/TSV or Parquet."),
    output_file: Path = typer.Option(..., "-o", "--output", help="JSON-lines file of the mined rows."),
    corpus: Optional[Path] = typer.Option(None, "--corpus", help="Texts to mine from (.txt, or a file with --field); "
                                          "default: the positives."),
    field: str = typer.Option("text", help="The corpus column that holds the text (not for .txt)."),
    index: Optional[Path] = typer.Option(None, "--index", help="A sentembed index to mine from, reusing its vectors."),
    model: str = typer.Option("all-mpnet-base-v2", "-m", "--model", help="Model name or directory."),
    dtype: str = dtype_option("Mining ranks candidates; negatives chosen in bfloat16 or int8 may differ from "
                              "float32's near the window's edges."),
    quantize: Optional[str] = quantize_option(),
    columns: Optional[str] = typer.Option(None, help="The two pair columns, comma-separated (default: detected)."),
    num_negatives: int = typer.Option(3, help="Negatives per pair."),
    range_min: int = typer.Option(0, help="Skip this many best candidates."),
    range_max: Optional[int] = typer.Option(None, help="Consider candidates up to this rank."),
    max_score: Optional[float] = typer.Option(None, help="Skip candidates scoring above this."),
    margin: Optional[float] = typer.Option(None, help="A negative scores at most positive - margin."),
    relative_margin: Optional[float] = typer.Option(None, help="A negative scores at most positive × (1 - this)."),
    sampling: str = typer.Option("top", help="top | random (within the window)."),
    mode: str = typer.Option("dense", help="dense | hybrid (hybrid needs --index)."),
    output: str = typer.Option("triplets", help="triplets | n-tuple | labeled-pairs."),
    batch_size: int = typer.Option(32, help="encode batch size."),
    chunk_size: int = typer.Option(1024, help="Pairs mined at a time (the memory bound's unit)."),
    seed: int = typer.Option(42, help="Seed for sampling=random."),
) -> None:
    """Mine hard negatives for (query, positive) pairs from a corpus or an index, streamed in bounded memory."""
    import sentembed

    from .hard_negatives import mine_hard_negatives, output_keys, read_pairs, write_rows

    try:
        if corpus is not None and index is not None:
            raise ValueError("give --corpus or --index, not both")
        encoder = sentembed.load(model, dtype=dtype, quantize=quantize)
        source: dict[str, Any] = {}
        if index is not None:
            source["index"] = open_index(index, encoder)
        elif corpus is not None:
            from ..io import file_format, read_records

            key = None if file_format(corpus) == "txt" else field
            source["corpus"] = (rec if key is None else rec[key] for _, rec in read_records(corpus))
        rows = mine_hard_negatives(
            read_pairs(pairs, columns.split(",") if columns else None), encoder=encoder, num_negatives=num_negatives,
            range_min=range_min, range_max=range_max, max_score=max_score, margin=margin,
            relative_margin=relative_margin, sampling=sampling, mode=mode, output=output, chunk_size=chunk_size,
            batch_size=batch_size, seed=seed, **source)
        count = write_rows(rows, output_file, output, num_negatives)
    except (ValueError, TypeError, FileNotFoundError, KeyError) as e:
        typer.secho(f"error: {e}", fg="red", err=True)
        raise typer.Exit(2)
    typer.echo(f"{count} rows in {output_file}; train on them with columns {output_keys(output, num_negatives)}")


def register(app: typer.Typer) -> None:
    """Add `train` and `mine-negatives` to the `sentembed` app."""
    app.command("mine-negatives")(mine_negatives)
    from .config import TrainConfig

    hints = typing.get_type_hints(TrainConfig)

    def train(config: Path, **overrides: Any) -> None:
        from .config import TrainConfig
        from .run import train as run

        try:
            cfg = TrainConfig.from_yaml(config, **overrides)
            result = run(cfg, base=config.resolve().parent)
        except (ValueError, FileNotFoundError) as e:   # DataError, bad fields: say it plainly
            typer.secho(f"error: {e}", fg="red", err=True)
            raise typer.Exit(2)
        typer.echo(f"trained {result.steps} steps, final loss {result.final_loss:.4f}; model in {result.output_dir}")
        if result.eval_results:
            for k, v in result.eval_results.items():
                typer.echo(f"  {k}: {v:.4f}")

    params = [inspect.Parameter("config", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Path,
                                default=typer.Argument(..., help="YAML config (see examples/train_*.yaml)"))]
    for f in dataclasses.fields(TrainConfig):
        tp = hints[f.name]
        flag = "--" + f.name.replace("_", "-")
        decls = [f"{flag}/--no-{f.name.replace('_', '-')}"] if _flag_type(tp) == Optional[bool] else [flag]
        params.append(inspect.Parameter(
            f.name, inspect.Parameter.KEYWORD_ONLY, annotation=_flag_type(tp),
            default=typer.Option(None, *decls, help=f"overrides `{f.name}` in the config", show_default=False)))
    train.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    train.__doc__ = "Fine-tune a model as CONFIG.yaml says (model, datasets and weights, loss, hyperparameters, evaluators, output)."
    app.command("train")(train)
