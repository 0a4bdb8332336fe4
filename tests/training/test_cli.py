"""`sentembed train CONFIG.yaml`: flags override the file; bad input fails with a clear error."""
from __future__ import annotations

import json

import typer
import yaml
from typer.testing import CliRunner

from sentembed.training.cli import register
from sentembed.training.config import TrainConfig


def app() -> typer.Typer:
    a = typer.Typer()
    register(a)

    @a.command()
    def version() -> None:  # a second command, so `train` stays a subcommand
        pass
    return a


def test_every_field_is_a_flag():
    import dataclasses

    cmd = typer.main.get_command(app()).commands["train"]
    flags = {o for p in cmd.params for o in p.opts}
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in flags, f.name
    assert "--no-resume" in {o for p in cmd.params for o in p.secondary_opts}


def test_train_from_yaml_with_flag_overrides(tiny_model, tmp_path):
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"anchor": f"q {i} beer", "positive": f"a {i} hops"}) + "\n" for i in range(40)))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": str(tiny_model), "output_dir": str(tmp_path / "out"),
                                   "datasets": [{"path": "pairs.jsonl", "weight": 1}], "loss": "mnrl",
                                   "batch_size": 8, "max_steps": 50, "show_progress": False}))
    r = CliRunner().invoke(app(), ["train", str(cfg), "--max-steps", "2", "--lr", "1e-4",
                                   "--loss-params", '{"scale": 10}'])
    assert r.exit_code == 0, r.output
    assert "trained 2 steps" in r.output
    card = (tmp_path / "out" / "README.md").read_text()
    assert "`lr`: 0.0001" in card and '"scale": 10.0' in card


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"datasets": [{"path": "x.jsonl"}], "loss": "nope"}))
    r = CliRunner().invoke(app(), ["train", str(cfg)])
    assert r.exit_code == 2 and "unknown loss 'nope'" in r.output
    cfg.write_text(yaml.safe_dump({"datasets": [{"path": "x.jsonl", "weight": -1}]}))
    r = CliRunner().invoke(app(), ["train", str(cfg)])
    assert r.exit_code == 2 and "weight must be a number > 0" in r.output
    cfg.write_text(yaml.safe_dump({"learning_rate": 1}))
    r = CliRunner().invoke(app(), ["train", str(cfg)])
    assert r.exit_code == 2 and "unknown config field(s) ['learning_rate']" in r.output


def test_evaluators_from_config(tiny_model, tmp_path):
    import sentembed
    from sentembed.training.evaluate import build_evaluators

    tsv = tmp_path / "sts.csv"
    tsv.write_text("".join(f"g\tf\t2012\t{i}\t{i % 5}.0\ta cat {i}\ta dog {i % 3}\n" for i in range(12)))
    (ev,) = build_evaluators([{"type": "STSEvaluator.from_file", "path": str(tsv)}])
    out = ev(sentembed.load(str(tiny_model)))
    assert ev.primary_metric in out
    import pytest
    with pytest.raises(ValueError, match="unknown type 'Nope'"):
        build_evaluators([{"type": "Nope"}])
