"""`sentembed serve` as a process: binds 127.0.0.1 unless told otherwise, enforces --api-key; its options
refused at once, naming the option; the encoder and the reranker loaded as --dtype and --quantize say."""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner

from sentembed.server.cli import register

ROOT = Path(__file__).resolve().parents[2]
LAUNCH = ("import typer; from sentembed.server.cli import register; app = typer.Typer(); "
          "app.callback()(lambda: None); register(app); app()")


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer from collapsing the group
        pass

    return app


def test_serve_help_and_loopback_default():
    result = CliRunner().invoke(_app(), ["serve", "--help"])
    assert result.exit_code == 0
    assert "127.0.0.1" in result.output and "--api-key" in result.output


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket listening on port, from /proc/net/tcp (state 0A)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, p = local.split(":")
        if int(p, 16) == port and state == "0A":
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def test_serve_process_binds_loopback_and_checks_key(tiny_model):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, "serve", str(tiny_model), "--port", str(port),
                             "--api-key", "k", "--log-level", "warning"], env=env, cwd=ROOT)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)
        if Path("/proc/net/tcp").exists():
            assert _listening_addresses(port) == {"127.0.0.1"}
        url = f"http://127.0.0.1:{port}/embed"
        assert httpx.post(url, json={"inputs": ["a"]}).status_code == 401
        assert httpx.post(url, json={"inputs": ["a"]}, headers={"Authorization": "Bearer k"}).status_code == 200
    finally:
        proc.terminate()
        proc.wait(20)


def test_an_empty_key_refuses_to_start_instead_of_turning_auth_off(tmp_path):
    runner = CliRunner()
    for args, env in ((["serve", "unused-model"], {"SENTEMBED_API_KEY": ""}),
                      (["serve", "unused-model", "--api-key", " "], {})):
        result = runner.invoke(_app(), args, env=env)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "SENTEMBED_API_KEY" in lines[0] and "empty" in lines[0], result.output
    keys = tmp_path / "keys.txt"
    keys.write_text("k1 team-a\nk2 team a b\n")
    result = runner.invoke(_app(), ["serve", "unused-model", "--api-keys", str(keys)])
    assert result.exit_code == 2 and f"{keys}:2" in result.output, result.output
    result = runner.invoke(_app(), ["serve", "unused-model", "--rate-limit", "0"])
    assert result.exit_code == 2 and "rate limit" in result.output, result.output


def test_unknown_dtype_or_quantization_names_the_option():
    runner = CliRunner()
    for args, option, choices in ((["--dtype", "fp8"], "--dtype", "float32, bfloat16, float16, auto"),
                                  (["--quantize", "int4"], "--quantize", "int8"),
                                  (["--quantize", "int8", "--dtype", "bf16"], "--dtype", "bfloat16")):
        result = runner.invoke(_app(), ["serve", "unused-model", *args])
        assert result.exit_code == 2, result.output
        said = " ".join(re.sub("[│╭╮╰╯─]", " ", result.output).split())  # rich's box, its lines joined
        assert f"Invalid value for '{option}'" in said and choices in said, result.output


def _serve_without_a_server(monkeypatch, args: list[str]):
    """`sentembed serve ARGS` up to where uvicorn would start; the app it would serve, or None."""
    import uvicorn

    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda application, **_: apps.append(application))
    monkeypatch.setenv("SENTEMBED_COMPILE", "0")  # int8 eager on tiny models, as the other int8 tests
    result = CliRunner().invoke(_app(), ["serve", *args])
    return result, (apps[0] if apps else None)


def test_a_dtype_that_cannot_run_here_is_one_line(monkeypatch, tiny_model):
    result, app = _serve_without_a_server(monkeypatch, [str(tiny_model), "--dtype", "float16"])
    assert result.exit_code == 2 and app is None, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "float16" in lines[0] and "CPU" in lines[0], lines


def test_serve_loads_the_encoder_and_the_reranker_as_asked(monkeypatch, tiny_model, tmp_path):
    import sentembed
    from sentembed.backends.int8 import Int8Runner, int8_supported
    from support import build_cross_encoder

    if not int8_supported():
        pytest.skip("no int8 products (torch._int_mm) in this torch build")
    rerankers = []
    load_cross_encoder = sentembed.load_cross_encoder
    monkeypatch.setattr(sentembed, "load_cross_encoder",
                        lambda *a, **k: rerankers.append(load_cross_encoder(*a, **k)) or rerankers[-1])
    reranker = str(build_cross_encoder(tmp_path))
    result, app = _serve_without_a_server(monkeypatch, [str(tiny_model), "--quantize", "int8", "--reranker", reranker])
    assert result.exit_code == 0, result.output
    runner = app.state.service.enc.pipeline.transformer.mpnet
    assert isinstance(runner, Int8Runner)
    info = app.state.service.info()
    assert (info["quantization"], info["dtype"]) == ("int8", str(runner.act_dtype).removeprefix("torch."))
    assert isinstance(rerankers[0].pipeline.transformer.mpnet, Int8Runner)
    result, app = _serve_without_a_server(monkeypatch, [str(tiny_model), "--dtype", "float32"])
    assert result.exit_code == 0, result.output
    info = app.state.service.info()
    assert (info["backend"], info["quantization"], info["dtype"]) == ("torch", None, "float32")
