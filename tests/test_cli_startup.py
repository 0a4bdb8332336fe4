"""The `sentembed` command answers help, argument errors, `models list` and shell completion
without importing torch (issue 25): each runs in a fresh interpreter, which then reports
whether torch is in `sys.modules`. Not a wall clock: a busy machine would make that flaky."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# Runs the command as the console script does, then says what it loaded.
PROBE = """
import json, sys
sys.argv = ["sentembed", *json.loads(sys.argv[1])]
from sentembed.cli import main
code = 0
try:
    main()
except SystemExit as exit:
    code = exit.code
print("\\nPROBE " + json.dumps({"code": code, "torch": "torch" in sys.modules}))
"""


def run(args: list[str], tmp_path, under_bash: bool = False, **env: str) -> tuple[str, dict]:
    environment = {**os.environ, "SENTEMBED_HOME": str(tmp_path), **env}
    command = [sys.executable, "-c", PROBE, json.dumps(args)]
    if under_bash:  # a bash parent that stays (no exec), as a user's shell is: what completion detects
        command = ["bash", "-c", '"$@"; exit $?', "bash", *command]
    done = subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120)
    output, _, report = done.stdout.rpartition("\nPROBE ")
    assert report, f"the probe did not finish: {done.stderr[-2000:]}"
    return output + done.stderr, json.loads(report)


@pytest.mark.parametrize("args, code, shows", [
    (["--help"], 0, "serve"),
    (["encode", "--help"], 0, "--output"),
    (["serve", "--help"], 0, "--cors-origin"),
    (["index", "--help"], 0, "search"),
    (["train", "--help"], 0, "--output-dir"),
    (["eval", "--help"], 0, "sts"),
    (["export", "--help"], 0, "--format"),
    (["encode"], 2, "Missing argument"),
    (["no-such-command"], 2, "No such command"),
    (["models", "list"], 0, "no models cached"),
])
def test_answers_without_torch(args, code, shows, tmp_path):
    output, report = run(args, tmp_path)
    assert report["code"] == code, output
    assert shows in output
    assert not report["torch"], f"`sentembed {' '.join(args)}` imported torch"


def test_shows_a_completion_script(tmp_path):
    output, report = run(["--show-completion"], tmp_path, under_bash=True)
    assert report["code"] == 0, output
    assert "complete" in output and "_SENTEMBED_COMPLETE" in output
    assert not report["torch"]


def test_completes_subcommands_through_the_environment_protocol(tmp_path):
    # What the installed bash script asks for when one presses TAB after `sentembed mod`.
    output, report = run([], tmp_path, _SENTEMBED_COMPLETE="complete_bash", COMP_WORDS="sentembed mod", COMP_CWORD="1")
    assert report["code"] == 0
    assert output.split() == ["models"]
    assert not report["torch"]


def test_the_package_still_loads_a_model_on_first_use(tiny_model):
    code = ("import sys, sentembed; assert 'torch' not in sys.modules; "
            f"enc = sentembed.load({str(tiny_model)!r}); print(type(enc).__name__, enc.encode(['a']).shape)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "SentenceEncoder"
