"""`sentembed export MODEL --format onnx|openvino [--quantize int8] -o DIR`.

    sentembed export all-mpnet-base-v2 --format onnx -o models/mpnet
    sentembed export all-mpnet-base-v2 --format openvino --quantize int8 -o models/mpnet
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    """Add `export` to the `sentembed` app."""

    @app.command("export")
    def export(
        model: str = typer.Argument(..., help="model name or Sentence Transformers directory"),
        format: str = typer.Option(..., "--format", "-f", help="onnx or openvino"),
        quantize: Optional[str] = typer.Option(None, "--quantize", "-q", help="int8"),
        output: Path = typer.Option(..., "--output", "-o", help="directory to write (a full model directory)"),
    ) -> None:
        """Export the encoder to ONNX or OpenVINO in the reference's file layout."""
        from .export import export_model

        try:
            written = export_model(model, format, output, quantize)
        except (ValueError, FileNotFoundError, ImportError) as err:
            typer.secho(f"error: {err}", fg="red", err=True)
            raise typer.Exit(2)
        typer.echo(f"wrote {written}")
        typer.echo(f"load it with sentembed.load({str(output)!r}, backend={format!r}"
                   + (", quantize='int8')" if quantize else ")"))
