"""The environment variables sentembed reads: all here, each an override of a default.

| variable                  | default            | what it changes                                      |
|---------------------------|--------------------|------------------------------------------------------|
| SENTEMBED_HOME            | ~/.cache/sentembed | where models are cached and int8 graphs are compiled |
| SENTEMBED_CPU             | detected           | choose kernels as on a CPU class: default, avx2      |
| SENTEMBED_COMPILE         | 1                  | 0: run the int8 graph uncompiled                     |
| SENTEMBED_INT8_ACT_DTYPE  | by CPU             | float32 or bfloat16 between the int8 products        |
| SENTEMBED_PACKING         | 0                  | 1: pack sequences into rows on CUDA (FlexAttention)  |

They are read on every call, so a program (or a test) may change them between calls.

    >>> settings().compile
    True
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


@dataclass(frozen=True)
class Settings:
    home: Path
    cpu_class: str | None
    compile: bool
    int8_act_dtype: str | None
    packing: bool


def settings() -> Settings:
    env = os.environ
    act = env.get("SENTEMBED_INT8_ACT_DTYPE", "").strip().lower() or None
    if act not in (None, "float32", "bfloat16"):
        raise ValueError(f"SENTEMBED_INT8_ACT_DTYPE={act!r}; choices: float32, bfloat16")
    return Settings(
        home=Path(env.get("SENTEMBED_HOME") or Path.home() / ".cache" / "sentembed"),
        cpu_class=env.get("SENTEMBED_CPU", "").strip().lower() or None,
        compile=env.get("SENTEMBED_COMPILE", "1").strip().lower() not in _FALSE,
        int8_act_dtype=act,
        packing=env.get("SENTEMBED_PACKING", "0").strip().lower() in _TRUE,
    )
