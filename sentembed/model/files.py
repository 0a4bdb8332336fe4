"""The JSON configuration files of a model directory, read and written (atomically)."""
from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_write


def write_json(file: Path, data: object) -> None:
    with atomic_write(file, "w") as out:
        out.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(file: Path) -> dict:
    file = Path(file)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from err
