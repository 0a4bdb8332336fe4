"""The int8 graph compiled ahead of time and kept on disk (backends/compiled.py), on a tiny random
MPNet: a later load finds it before building any int8 weight and gives the very vectors the fresh
compile gave; a change to anything the graph depends on misses; a damaged file is named in a
warning and compiled again. One compile for the module (about 40 s on 2 busy cores), one more for
the damaged file that is rebuilt."""
from __future__ import annotations

import copy
import dataclasses
import gc
import os
import shutil
import subprocess
import sys
import warnings
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import sentembed
from sentembed.backends import compiled, int8
from sentembed.backends.compiled import compile_pays
from sentembed.backends.int8 import Int8Runner, int8_supported
from sentembed.model import cpu as cpu_mod

TEXTS = ["A man is playing a guitar.", "The weather is lovely today, isn't it?", "short",
         "A much longer sentence, with commas, numbers like 1234 and words the tokenizer splits apart."]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not int8_supported(), reason="no int8 products (torch._int_mm) in this torch build")]


@pytest.fixture(scope="module")
def fresh(tiny_model, tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A SENTEMBED_HOME in which the tiny model's graph was just compiled, and the vectors of that run."""
    if not compile_pays():
        pytest.skip("this CPU runs int8 uncompiled (no VNNI or no C++ compiler)")
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SENTEMBED_HOME", str(home))
        vectors = sentembed.load(str(tiny_model), quantize="int8").encode(TEXTS, normalize=False)
    assert len(list((home / "compiled").glob("int8-*.pt2"))) == 1
    return home, vectors


@pytest.fixture
def int8_weights_built(monkeypatch) -> list[int]:
    """One entry per int8 weight matrix quantized in this test."""
    calls: list[int] = []
    quantize = int8.quantize_weight
    monkeypatch.setattr(int8, "quantize_weight", lambda w: calls.append(1) or quantize(w))
    return calls


@pytest.fixture
def float_mpnet(tiny_model):
    return sentembed.load(str(tiny_model)).pipeline.transformer.mpnet


def _package(home: Path) -> Path:
    return next((home / "compiled").glob("int8-*.pt2"))


def test_a_later_load_builds_no_int8_weight_and_gives_the_same_vectors(fresh, tiny_model, monkeypatch,
                                                                        int8_weights_built):
    home, want = fresh
    monkeypatch.setenv("SENTEMBED_HOME", str(home))
    monkeypatch.setattr(compiled, "compile_package", lambda *a: pytest.fail("compiled again"))
    os.utime(_package(home), (1_000, 1_000))
    enc = sentembed.load(str(tiny_model), quantize="int8")
    runner = enc.pipeline.transformer.mpnet
    assert runner.compiled and runner.model is None
    assert int8_weights_built == []
    np.testing.assert_array_equal(enc.encode(TEXTS, normalize=False), want)
    assert _package(home).stat().st_mtime > 1_000  # marked used: pruning keeps it longest
    assert int8_weights_built == [] and runner.model is None  # the graph ran, not the eager modules


def test_threads_encoding_at_once_each_get_their_vectors(fresh, tiny_model, tmp_path):
    """The graph serves one call at a time (waited for with the GIL held, which its int8 op
    needs): a second thread waits for the first instead of both hanging. In a process of its
    own, which a hang would not let this one leave."""
    home, want = fresh
    script = (f"import numpy as np, sentembed; from support import encode_in_threads\n"
              f"enc = sentembed.load({str(tiny_model)!r}, quantize='int8')\n"
              f"assert enc.pipeline.transformer.mpnet.compiled\n"
              f"np.save({str(tmp_path / 'got.npy')!r}, np.stack(encode_in_threads(enc, {TEXTS!r} * 8)))\n")
    env = {**os.environ, "SENTEMBED_HOME": str(home), "PYTHONPATH": str(Path(__file__).parents[1])}
    try:
        subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=300)
    except subprocess.TimeoutExpired:
        pytest.fail("encode from 4 threads at once hung")
    for got in np.load(tmp_path / "got.npy"):
        np.testing.assert_array_equal(got, np.tile(want, (8, 1)))


def test_a_later_load_keeps_no_float_weights(fresh, tiny_model, monkeypatch):
    """The float MPNet is not kept for the eager fallback: it is read again if ever needed."""
    home, _ = fresh
    monkeypatch.setenv("SENTEMBED_HOME", str(home))
    seen = []
    from_mpnet = Int8Runner.from_mpnet.__func__
    spy = classmethod(lambda cls, model, **kw: seen.append(weakref.ref(model)) or from_mpnet(cls, model, **kw))
    monkeypatch.setattr(Int8Runner, "from_mpnet", spy)
    enc = sentembed.load(str(tiny_model), quantize="int8")
    gc.collect()
    assert len(seen) == 1 and seen[0]() is None
    assert enc.pipeline.transformer.mpnet.compiled


def test_a_failing_graph_falls_back_to_eager_from_the_weights_read_again(fresh, tiny_model, tiny_fp32_vectors,
                                                                         monkeypatch):
    home, want = fresh
    monkeypatch.setenv("SENTEMBED_HOME", str(home))
    enc = sentembed.load(str(tiny_model), quantize="int8")
    runner = enc.pipeline.transformer.mpnet

    def broken(*args):
        raise RuntimeError("an inductor gap")
    runner._graph = broken
    with pytest.warns(UserWarning, match="int8 runs eagerly"):
        got = enc.encode(TEXTS, normalize=False)
    assert runner.model is not None and not runner.compiled
    # The eager modules compute what the graph does, up to rounding; against float32, int8's fidelity.
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()
    cos = (got * tiny_fp32_vectors).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(tiny_fp32_vectors, axis=1)
    assert cos.min() > 0.99


@pytest.fixture(scope="module")
def tiny_fp32_vectors(tiny_model) -> np.ndarray:
    return sentembed.load(str(tiny_model)).encode(TEXTS, normalize=False)


def _changed_weight(model):
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.encoder.layer[0].intermediate.dense.weight[0, 0] += 1e-4
    return model, {}


def _changed_config(model):
    model = copy.deepcopy(model)
    model.config = dataclasses.replace(model.config, layer_norm_eps=model.config.layer_norm_eps * 2)
    return model, {}


def _changed_code(model, monkeypatch):
    code = compiled.graph_code
    monkeypatch.setattr(compiled, "graph_code", lambda: code() + b"\n# one more line\n")
    return model, {}


def _changed_torch(model, monkeypatch):
    monkeypatch.setattr(torch, "__version__", torch.__version__ + ".other")
    return model, {}


def _changed_cpu(model, monkeypatch):
    here = cpu_mod.cpu()
    monkeypatch.setattr(compiled, "cpu", lambda: dataclasses.replace(here, amx=not here.amx))
    return model, {}


CHANGES = {
    "weights": lambda model, monkeypatch: _changed_weight(model),
    "config": lambda model, monkeypatch: _changed_config(model),
    "code": _changed_code,
    "torch": _changed_torch,
    "cpu": _changed_cpu,
    "activation dtype": lambda model, monkeypatch: (
        model, {"act_dtype": torch.float32 if int8.activation_dtype() == torch.bfloat16 else torch.bfloat16}),
    "layers kept": lambda model, monkeypatch: (model, {"keep": ("output.dense",)}),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_any_change_the_graph_depends_on_misses(fresh, float_mpnet, monkeypatch, int8_weights_built, change):
    home, _ = fresh
    monkeypatch.setenv("SENTEMBED_HOME", str(home))
    same = Int8Runner.from_mpnet(float_mpnet, compile=True)
    assert same.compiled and same.model is None and int8_weights_built == []  # the baseline hits
    model, kwargs = CHANGES[change](float_mpnet, monkeypatch)
    runner = Int8Runner.from_mpnet(model, compile=True, **kwargs)
    # A miss: the int8 weights are built now, and the graph is compiled at the first run, to a new file.
    assert runner._package is not None and runner._package != _package(home)
    assert runner.model is not None and int8_weights_built


def test_a_weight_file_rewritten_with_its_size_and_date_misses(fresh, tiny_model, tmp_path, monkeypatch):
    """The key hashes the weights themselves: a file's size and mtime would not tell these apart."""
    home, _ = fresh
    monkeypatch.setenv("SENTEMBED_HOME", str(home))
    copied = tmp_path / "model"
    shutil.copytree(tiny_model, copied)
    file = copied / "model.safetensors"
    before = file.stat()
    state = load_file(str(file))
    name = next(k for k in sorted(state) if k.endswith("intermediate.dense.weight"))
    state[name][0, 0] += 1e-3
    save_file(state, str(file), metadata={"format": "pt"})
    os.utime(file, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (file.stat().st_size, file.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    runner = sentembed.load(str(copied), quantize="int8").pipeline.transformer.mpnet
    assert runner._package is not None and runner._package != _package(home)


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _flip_a_byte(path: Path) -> None:
    """One byte in the middle of the package, inside the compiled library and its constants:
    the loader itself reads such a file without complaint."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def _garbage(path: Path) -> None:
    path.write_bytes(b"not a package")


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte, _garbage], ids=["truncated", "byte flipped", "garbage"])
def test_a_damaged_package_is_named_and_compiled_again(fresh, tiny_model, tmp_path, monkeypatch, damage):
    home, want = fresh
    copy_home = tmp_path / "home"
    shutil.copytree(home, copy_home)
    monkeypatch.setenv("SENTEMBED_HOME", str(copy_home))
    package = _package(copy_home)
    damage(package)
    cpu_mod._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match=f"{package.name} does not load, damaged or foreign"):
        enc = sentembed.load(str(tiny_model), quantize="int8")
    runner = enc.pipeline.transformer.mpnet
    assert runner._package == package  # compiled again, over the damaged file, at the first run
    if damage is not _flip_a_byte:
        return  # one real compile is enough: the subtle damage
    np.testing.assert_allclose(enc.encode(TEXTS, normalize=False), want, atol=1e-6)
    assert runner._graph is not None and runner._package is None
    cpu_mod._warn_once.cache_clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = sentembed.load(str(tiny_model), quantize="int8")  # now a hit, without a warning
    assert not [w for w in caught if "does not load" in str(w.message)]
    assert again.pipeline.transformer.mpnet.model is None
    np.testing.assert_allclose(again.encode(TEXTS, normalize=False), want, atol=1e-6)


def test_the_graph_computes_what_the_eager_modules_do(fresh, tiny_model, monkeypatch):
    home, _ = fresh
    monkeypatch.setenv("SENTEMBED_HOME", str(home))
    enc = sentembed.load(str(tiny_model))
    eager = Int8Runner.from_mpnet(enc.pipeline.transformer.mpnet, compile=False)
    graph = Int8Runner.from_mpnet(enc.pipeline.transformer.mpnet, compile=True)
    assert not eager.compiled and graph.compiled and graph.model is None
    features = enc.tokenize(TEXTS)
    with torch.inference_mode():
        a = eager(features["input_ids"], features["attention_mask"])
        b = graph(features["input_ids"], features["attention_mask"])
    assert graph.compiled, "the graph failed and eager took over"
    assert (a - b).abs().max() < 0.05 * a.abs().max()
