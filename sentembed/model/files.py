"""Small atomic file helpers shared by the model writers."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def write_text_atomic(file: Path, text: str) -> None:
    file = Path(file)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(tmp, file)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(file: Path, data: object) -> None:
    write_text_atomic(file, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(file: Path) -> dict:
    file = Path(file)
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from err
