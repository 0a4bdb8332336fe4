"""`sentembed train CONFIG.yaml [--field value ...]`: every TrainConfig field is also a flag
(lists and dicts as JSON), and a flag wins over the file.

    sentembed train examples/train_scifact.yaml --max-steps 100 --precision bf16
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path
from typing import Any, Optional

import typer


def _flag_type(tp: Any) -> Any:
    # Typer wants plain scalars; structures travel as JSON strings.
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    base = args[0] if args else tp
    if base in (int, float, bool, str):
        return Optional[base]
    return Optional[str]


def register(app: typer.Typer) -> None:
    """Add `train` to the `sentembed` app."""
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
