"""EncodePool on the tiny model: worker processes give what the in-process encoder gives,
and a broken worker fails loudly instead of hanging."""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import sentembed
from sentembed import pool as pool_module
from sentembed.pool import EncodePool
from sentembed.cli import app


def _texts(n: int = 200) -> list[str]:
    rng = np.random.default_rng(0)
    words = "the a cat dog sat on mat quickly over lazy brown fox jumps river bank money ünïcödé".split()
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 60)))) for _ in range(n)]
    texts[n // 4] = ""
    texts[n // 20] = "a very long text " * 500  # far past max_seq_length: truncated like in-process
    return texts


@pytest.fixture(scope="module")
def encoder(tiny_model):
    return sentembed.load(str(tiny_model), device="cpu")


@pytest.fixture(scope="module")
def pool(tiny_model):
    with EncodePool(tiny_model, workers=2, threads_per_worker=1, device="cpu", timeout=60) as pool:
        yield pool


@pytest.mark.parametrize("kwargs", [{}, {"normalize": False}, {"convert_to": "torch", "batch_size": 7},
                                    {"truncate_dim": 16, "normalize": True}])
def test_same_embeddings_as_in_process(pool, encoder, kwargs):
    texts = _texts()
    expected, got = encoder.encode(texts, **kwargs), pool.encode(texts, **kwargs)
    assert type(got) is type(expected) and got.shape == expected.shape and got.dtype == expected.dtype
    assert float(abs(got - expected).max()) < 1e-6


def test_int8_is_quantized_over_the_whole_input(pool, encoder):
    texts = _texts()
    expected, got = encoder.encode(texts, precision="int8"), pool.encode(texts, precision="int8")
    assert got.dtype == np.int8 and got.shape == expected.shape
    # Ranges come from all rows, not per chunk; a float difference of 1e-7 may still cross a level.
    assert np.abs(got.astype(int) - expected).max() <= 1 and (got == expected).mean() > 0.999


def test_single_string_and_empty_list(pool, encoder):
    got = pool.encode("A man is eating food.")
    assert got.shape == (encoder.dimension,)
    assert float(abs(got - encoder.encode("A man is eating food.")).max()) < 1e-6
    assert pool.encode([]).shape == (0, encoder.dimension)
    assert pool.encode([], precision="ubinary").dtype == np.uint8


def test_bad_inputs_fail_in_the_parent_and_leave_the_pool_usable(pool):
    with pytest.raises(TypeError, match="item 1 is int"):
        pool.encode(["fine", 3])
    with pytest.raises(TypeError, match="colour"):
        pool.encode(["fine"], colour="red")
    with pytest.raises(ValueError, match="unknown prompt_name 'nope'"):
        pool.encode(["fine"], prompt_name="nope")
    with pytest.raises(ValueError, match="convert_to='numpy'"):
        pool.encode(["a", "b"], convert_to="torch", precision="int8")
    assert pool.encode(["still works"]).shape == (1, pool.worker_info[0]["dimension"])


def test_threads_per_worker_is_honoured(pool):
    assert [info["threads"] for info in pool.worker_info] == [1, 1]
    assert sorted(info["pid"] for info in pool.worker_info) == sorted(pool.pids)


def test_pool_from_a_loaded_encoder(encoder):
    with EncodePool(encoder, workers=1, threads_per_worker=3, timeout=60) as pool:
        saved = pool.path
        assert saved.is_dir() and pool.worker_info[0]["threads"] == 3
        texts = _texts(40)
        assert float(abs(pool.encode(texts) - encoder.encode(texts)).max()) < 1e-6
    assert not saved.exists()  # the temporary copy goes with the pool


def test_killed_worker_is_a_quick_runtime_error(tiny_model, monkeypatch):
    pool = EncodePool(tiny_model, workers=2, threads_per_worker=1, device="cpu", chunk_size=4, timeout=30)

    class KillOnFirstChunk:
        """Stands in for the progress bar: kills worker 0 once the first chunk is back."""

        def __init__(self, *args, **kwargs):
            self.killed = False

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

        def update(self, n):
            if not self.killed:
                os.kill(pool.pids[0], signal.SIGKILL)
                self.killed = True

    monkeypatch.setattr(pool_module, "tqdm", KillOnFirstChunk)
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"pool worker 0 \(pid \d+\) died .*killed by signal SIGKILL"):
        pool.encode(_texts(2000))
    assert time.monotonic() - started < 15
    started = time.monotonic()
    pool.close()
    assert time.monotonic() - started < 10
    assert not any(p.is_alive() for p in pool._processes)
    with pytest.raises(RuntimeError, match="no longer encode"):
        pool.encode(["after the failure"])


def test_missing_model_path_fails_in_the_constructor(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        EncodePool(missing, workers=2)


def test_worker_that_cannot_load_names_the_cause(tiny_model, tmp_path):
    import shutil

    broken = Path(shutil.copytree(tiny_model, tmp_path / "broken"))
    weights = next(broken.rglob("model.safetensors"))
    weights.write_bytes(b"not a safetensors file")
    with pytest.raises(RuntimeError, match=r"pool worker 0 \(pid \d+\) could not load .*broken"):
        EncodePool(broken, workers=1, device="cpu", timeout=60)


def test_cli_workers_match_in_process(tiny_model, tmp_path):
    (tmp_path / "in.txt").write_text("\n".join(t or "-" for t in _texts(60)) + "\n", encoding="utf-8")
    runner = CliRunner()
    for workers in (1, 2):
        result = runner.invoke(app, ["encode", str(tmp_path / "in.txt"), "-o", str(tmp_path / f"out{workers}.npy"),
                                     "--model", str(tiny_model), "--workers", str(workers)])
        assert result.exit_code == 0, result.output
    one, two = np.load(tmp_path / "out1.npy"), np.load(tmp_path / "out2.npy")
    assert one.shape == two.shape and len(one) == 60
    assert float(abs(one - two).max()) < 1e-6
