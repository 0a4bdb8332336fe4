"""The command-line options that choose how a model runs, `--dtype` and `--quantize`: defined
once for every command that loads a model. Their choices are those `sentembed.load` takes
(`DTYPES`, `QUANTIZATIONS`), so a wrong name is refused before torch is imported or anything
loads, with an error that names the option; a combination that cannot run (float16 on a CPU,
int8 on a GPU) is refused by `load` itself, which names the arguments.

    @app.command()
    def serve(model: str, dtype: str = dtype_option(), quantize: Optional[str] = quantize_option()):
        enc = sentembed.load(model, dtype=dtype, quantize=quantize)
"""
from __future__ import annotations

from typing import Any

import typer

from . import DTYPES, QUANTIZATIONS

# The torch path's dtypes, and "auto": the fastest within cosine 0.9999 of float32 (model/cpu.py).
DTYPE_CHOICES = (*DTYPES["torch"], "auto")
QUANTIZE_CHOICES = tuple(q for q in QUANTIZATIONS if q is not None)


def _one_of(choices: tuple[str, ...]) -> Any:
    """A callback that refuses a value outside choices (typer says which option; None passes)."""
    def check(value: str | None) -> str | None:
        if value is not None and value not in choices:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(choices)}")
        return value
    return check


def dtype_option(more_help: str = "") -> Any:
    """`--dtype float32|bfloat16|float16|auto`, float32 by default."""
    return typer.Option(
        "float32", "--dtype", callback=_one_of(DTYPE_CHOICES), metavar="DTYPE",
        help="float32; bfloat16 (on a CPU without native bf16: float32, with a warning); float16 (GPU only); "
             "auto: the fastest within cosine 0.9999 of float32 (bfloat16 on CPUs that have it, float16 on a GPU). "
             + more_help)


def quantize_option(more_help: str = "") -> Any:
    """`--quantize int8`, off by default."""
    return typer.Option(
        None, "--quantize", callback=_one_of(QUANTIZE_CHOICES), metavar="|".join(QUANTIZE_CHOICES),
        help="int8: int8 weights and per-token int8 activations, on CPU (VNNI); between the int8 products it "
             "runs in bfloat16 where the CPU has it natively, else float32 (SENTEMBED_INT8_ACT_DTYPE overrides). "
             "The first run on a machine compiles its graph (about a minute, kept on disk). " + more_help)
