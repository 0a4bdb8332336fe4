"""Every path picks kernels the CPU has: detection, the choices made from it, and the fallbacks,
run on every machine (SENTEMBED_CPU=avx2 in-process; oneDNN limited to AVX2 in a child)."""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import sentembed
from sentembed.model import cpu as cpu_mod
from sentembed.model.cpu import choose_dtype, cpu

from support import HashEncoder

TEXTS = ["A man is playing a guitar.", "Kinder spielen im Park.", "", "数学は美しい", "x " * 200]


def _onednn_runs_bf16() -> bool:
    try:
        x = torch.ones(4, 32, dtype=torch.bfloat16)
        torch.ops.mkldnn._linear_pointwise(x, torch.ones(8, 32, dtype=torch.bfloat16), None, "none", [], "")
        return True
    except RuntimeError:
        return False


def test_detection_agrees_with_onednn():
    assert cpu().bf16 == _onednn_runs_bf16()
    assert cpu().capability == torch.backends.cpu.get_cpu_capability()
    assert cpu().name in cpu().describe()


def test_auto_picks_by_cpu_and_device():
    assert choose_dtype("auto") == ("bfloat16" if cpu().bf16 else "float32")
    assert choose_dtype("auto", "cuda") == "float16"
    assert choose_dtype(None) == "float32"
    assert choose_dtype("float32") == "float32"


def test_override_reads_as_an_avx2_cpu(avx2_cpu):
    assert (avx2_cpu.bf16, avx2_cpu.vnni, avx2_cpu.amx, avx2_cpu.capability) == (False, False, False, "AVX2")
    assert "SENTEMBED_CPU=avx2" in avx2_cpu.describe()
    assert choose_dtype("auto") == "float32"
    cpu_mod._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match="no native bf16"):
        assert choose_dtype("bfloat16") == "float32"


@pytest.mark.parametrize("cap", ["AVX2", "avx512_core"])
def test_vnni_reads_absent_where_onednn_is_capped_below_it(monkeypatch, cap):
    """A Sapphire Rapids lists avx_vnni in /proc/cpuinfo; capped at AVX2 its oneDNN cannot use it."""
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    assert cpu_mod._onednn_may_use_vnni() is False
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2_VNNI")
    assert cpu_mod._onednn_may_use_vnni() is True


def test_a_wrong_override_names_the_choices(monkeypatch):
    monkeypatch.setenv("SENTEMBED_CPU", "avx9000")
    cpu_mod.reset()
    try:
        with pytest.raises(ValueError, match="default, avx2, avx512"):
            cpu()
    finally:
        monkeypatch.delenv("SENTEMBED_CPU")
        cpu_mod.reset()


def test_bf16_without_native_bf16_runs_float32_exactly(avx2_cpu, tiny_model):
    fp32 = sentembed.load(str(tiny_model)).encode(TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        enc = sentembed.load(str(tiny_model), dtype="bfloat16")
    assert enc.dtype == "float32"
    np.testing.assert_allclose(enc.encode(TEXTS), fp32, atol=1e-6)


def test_bf16_modules_take_the_stock_path_without_native_bf16(avx2_cpu, tiny_model):
    # A pipeline cast to bf16 by hand (training does this) must not reach oneDNN's bf16 kernels.
    from sentembed.model import SentencePipeline

    pipeline = SentencePipeline.load(tiny_model).eval().to(torch.bfloat16)
    fp32 = SentencePipeline.load(tiny_model).eval()
    ids = torch.randint(3, pipeline.transformer.mpnet.config.vocab_size, (3, 17))
    mask = torch.ones_like(ids)
    mpnet16, mpnet32 = pipeline.transformer.mpnet, fp32.transformer.mpnet
    with torch.no_grad():
        got, want = mpnet16(ids, mask).float(), mpnet32(ids, mask)
    cos = torch.nn.functional.cosine_similarity(got, want, dim=-1)
    assert cos.min() > 0.999


def test_int8_without_vnni_runs_uncompiled_and_says_so(avx2_cpu, tiny_model):
    from sentembed.backends.compiled import compile_pays

    cpu_mod._warn_once.cache_clear()
    with pytest.warns(RuntimeWarning, match="without VNNI"):
        assert compile_pays() is False
    fp32 = sentembed.load(str(tiny_model)).encode(TEXTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        enc = sentembed.load(str(tiny_model), quantize="int8")
    assert enc.pipeline.transformer.mpnet.act_dtype == torch.float32
    assert (enc.encode(TEXTS) * fp32).sum(1).min() > 0.99


def test_the_index_scans_fp32_without_native_bf16(avx2_cpu, tmp_path):
    from sentembed.search import Index
    from sentembed.search.prefilter import bf16_scan_pays

    assert bf16_scan_pays() is False
    enc = HashEncoder(dimension=32)
    texts = [f"document {i} on {w}" for i, w in enumerate(["cats", "stocks", "rain", "code"] * 100)]
    idx = Index.create(tmp_path / "ix", enc)
    idx.add(texts)
    idx.close()
    # A wrecked bf16 copy is never read: no warning, the fp32 answer.
    (tmp_path / "ix" / "vectors" / "seg-000001.bf16").write_bytes(b"\0" * 100)
    idx = Index.open(tmp_path / "ix", enc)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hits = idx.search_many(texts[:10], 5)
    vectors = enc.encode(texts)
    for query, row in zip(texts[:10], hits):
        truth = np.sort(vectors @ enc.encode(query))[::-1][:5]
        np.testing.assert_allclose([h.score for h in row], truth, atol=1e-5)


EMULATED = r"""
import json, sys, warnings
import numpy as np, torch
import sentembed
from sentembed.model.cpu import cpu
from sentembed.search import semantic_search
from sentembed.search.prefilter import bf16_scan_pays

out = {"bf16": cpu().bf16, "vnni": cpu().vnni, "scan_pays": bf16_scan_pays()}
x = torch.ones(4, 32, dtype=torch.bfloat16)
try:
    torch.ops.mkldnn._linear_pointwise(x, torch.ones(8, 32, dtype=torch.bfloat16), None, "none", [], "")
    out["onednn_bf16_refused"] = False
except RuntimeError:
    out["onednn_bf16_refused"] = True
texts = json.loads(sys.argv[2])
fp32 = sentembed.load(sys.argv[1]).encode(texts)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    bf16 = sentembed.load(sys.argv[1], dtype="bfloat16")
    int8 = sentembed.load(sys.argv[1], quantize="int8").encode(texts)
    out["warnings"] = [str(w.message) for w in caught]
out["bf16_dtype"] = bf16.dtype
out["bf16_max_diff"] = float(np.abs(bf16.encode(texts) - fp32).max())
out["int8_min_cos"] = float((int8 * fp32).sum(1).min())
out["auto"] = sentembed.load(sys.argv[1], dtype="auto").dtype
rng = np.random.default_rng(0)
corpus = rng.standard_normal((3000, 32)).astype(np.float32)
queries = rng.standard_normal((5, 32)).astype(np.float32)
got = semantic_search(queries, corpus, top_k=7, score="dot")
truth = np.argsort(-(queries.astype(np.float64) @ corpus.astype(np.float64).T), axis=1)[:, :7]
out["search_exact"] = bool((got.indices == truth).all())
print(json.dumps(out))
"""


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="oneDNN's ISA limit is an x86 setting")
def test_every_path_runs_where_onednn_has_only_avx2(tiny_model):
    """A child process whose oneDNN and torch kernels are limited to AVX2, as on a Zen 3:
    oneDNN really refuses bf16 there, and every dtype still loads and gives the right vectors."""
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "1"}
    env.pop("SENTEMBED_CPU", None)
    run = subprocess.run([sys.executable, "-c", EMULATED, str(tiny_model), json.dumps(TEXTS)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["onednn_bf16_refused"] and not out["bf16"] and not out["vnni"] and not out["scan_pays"]
    assert out["bf16_dtype"] == "float32" and out["bf16_max_diff"] <= 1e-6
    assert out["auto"] == "float32"
    assert out["int8_min_cos"] > 0.99
    assert out["search_exact"]
    assert any("no native bf16" in w for w in out["warnings"])
    assert any("without VNNI" in w for w in out["warnings"])
    assert not any("primitive" in w for w in out["warnings"])


def test_choices_made_for_one_cpu_class_go_with_it(monkeypatch):
    """A kernel chosen under SENTEMBED_CPU=avx2 is not used once the CPU is read again (before,
    the suite's AVX2 tests left the AMX tests skipped for the rest of the session)."""
    from sentembed.model.int8_matmul import amx_matmul

    native = amx_matmul()
    monkeypatch.setenv(cpu_mod.OVERRIDE_ENV, "avx2")
    cpu_mod.reset()
    try:
        assert amx_matmul() is False
    finally:
        monkeypatch.delenv(cpu_mod.OVERRIDE_ENV)
        cpu_mod.reset()
    assert amx_matmul() is native
    if cpu().amx:
        assert native is True
