"""The Ray engine on a local Ray instance this module starts (2 CPUs, started once):
the same vectors as local encode, and a worker killed mid-job is retried with every row
written exactly once."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from sentembed.distributed import embed_corpus, read_embeddings

ray = pytest.importorskip("ray")
ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_ray():
    # Workers import sentembed from this checkout even where it is not pip-installed.
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield
    ray.shutdown()


def test_ray_equals_local_encode(local_ray, corpus, tiny_model, tiny_encoder, tmp_path, expected):
    fields = ("title", "text")
    summary = embed_corpus([corpus], tmp_path / "ray", str(tiny_model), engine="ray", text_fields=fields,
                           rows_per_shard=64, actors=2)
    ids, texts = expected(corpus, fields)
    assert summary["rows"] == summary["written"] == len(ids)
    got_ids, vectors = read_embeddings(tmp_path / "ray")
    assert got_ids == ids
    np.testing.assert_allclose(vectors, tiny_encoder.encode(texts), atol=1e-5)


def test_killed_worker_is_retried_and_rows_written_once(local_ray, corpus, tiny_model, tmp_path, expected):
    marker = tmp_path / "killed"
    out = tmp_path / "out"

    # Defined here so Ray ships it by value. The first worker to reach its third shard
    # dies with SIGKILL after writing the temporary file, before the rename: a real crash,
    # no Python cleanup. Ray restarts the actor and retries the block.
    def kill_once(name: str, tmp: Path) -> None:
        import signal

        if name.endswith("000000000128.parquet"):
            try:
                fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                return
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            os.kill(os.getpid(), signal.SIGKILL)

    summary = embed_corpus([corpus], out, str(tiny_model), engine="ray", rows_per_shard=64, actors=2,
                           before_rename=kill_once)
    assert marker.exists(), "no worker was killed: the test proved nothing"
    ids, _ = expected(corpus)
    got_ids, vectors = read_embeddings(out)
    assert sorted(got_ids) == sorted(ids) and len(got_ids) == len(set(got_ids))  # every row, once
    assert got_ids == ids
    assert summary["rows"] == len(ids)
    assert not list(out.glob(".part-*.tmp"))  # the dead attempt's temporary file is gone
    for shard in out.glob("part-*.parquet"):
        assert pq.ParquetFile(shard).metadata.num_rows > 0
