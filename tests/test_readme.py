"""The README's Python blocks run as written, in order, on the real model; the client blocks
against a live server (their 127.0.0.1:8080 becomes the test server's address)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from support import live_server

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)

pytestmark = [pytest.mark.real_model, pytest.mark.slow]


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 4


def test_every_python_block_runs(real_encoder, tmp_path, monkeypatch):
    from sentembed.server import create_app

    monkeypatch.chdir(tmp_path)  # the blocks write indexes and models where they stand
    namespace: dict = {}
    with live_server(create_app(real_encoder)) as url:
        for number, block in enumerate(BLOCKS, 1):
            code = block.replace("http://127.0.0.1:8080", url)
            try:
                exec(compile(code, f"README.md, Python block {number}", "exec"), namespace)
            except Exception as err:  # the block, with what it raised, is the message
                pytest.fail(f"README Python block {number} raised {type(err).__name__}: {err}\n{block}")
