"""benchmarks/plots.py draws each benchmark's chart from the results its script writes: checked
on small synthetic results in the scripts' own shapes (encode.py's summarize, serve.py's
percentiles, search.py's ANN sweeps run for real on a few thousand random vectors), never on
a heavy run."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from support import benchmark_script as load


def assert_chart(path: Path) -> None:
    import matplotlib.image

    image = matplotlib.image.imread(path)  # a PNG that decodes, with something drawn on it
    assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.05, path


@pytest.fixture(scope="module")
def plots():
    return load("plots")


def test_encode_chart_from_summarize(plots, tmp_path):
    encode = load("encode")
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((8, 16)).astype(np.float32)
    variants = []
    for name, precision, seconds in (("st-torch-fp32", "fp32", 2.0), ("se-fp32", "fp32", 1.9),
                                     ("se-bf16", "bf16", 1.0), ("se-int8", "int8", 0.7)):
        v = encode.Variant(name, precision, build=lambda: None)
        v.times = {"sentences": [seconds, seconds * 1.1], "documents": [seconds * 3]}
        v.embeddings = {s: emb + 1e-3 * rng.standard_normal(emb.shape).astype(np.float32) for s in v.times}
        variants.append(v)
    peaks = {"fp32": 200.0, "bf16": 400.0, "int8": 850.0}
    rows = encode.summarize(variants, {"sentences": [], "documents": []}, {"sentences": 1000, "documents": 3000}, peaks)
    result = {"peaks": peaks, "ceilings": {p: peaks[p] * 1e9 / encode.FLOP_PER_TOKEN for p in peaks},
              "rows": rows + [{"variant": "st-ov", "set": "documents", "error": "no OpenVINO"}]}
    (tmp_path / "encode.json").write_text(json.dumps(result))
    chart = plots.redraw(tmp_path / "encode.json")
    assert chart == tmp_path / "encode.png"
    assert_chart(chart)


def test_serve_chart(plots, tmp_path):
    latencies = np.random.default_rng(1).gamma(2.0, 20.0, size=(2, 96)) / 1e3
    single = {name: {"p50_ms": float(np.percentile(v, 50) * 1e3), "p99_ms": float(np.percentile(v, 99) * 1e3),
                     "percentiles_ms": {str(p): float(np.percentile(v, p) * 1e3) for p in plots.PERCENTILES}}
              for name, v in zip(("batching", "no batching"), latencies)}
    assert_chart(plots.serve_chart({"clients": 32, "single": single}, tmp_path / "serve.png"))
    for stats in single.values():  # results written before the percentiles were kept
        del stats["percentiles_ms"]
    (tmp_path / "old.json").write_text(json.dumps({"single": single}))
    assert_chart(plots.redraw(tmp_path / "old.json"))


def test_search_chart_from_real_sweeps(plots, tmp_path):
    search = load("search")
    rng = np.random.default_rng(2)
    corpus = rng.standard_normal((4000, 32)).astype(np.float32)
    corpus /= np.linalg.norm(corpus, axis=1, keepdims=True)
    q = corpus[:20] + 0.3 * rng.standard_normal((20, 32)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    result = {"hnsw": search.hnsw_bench(corpus, q, 10, 4000, 1), "ivfpq": search.ivfpq_bench(corpus, q, 10, 4000, 1)}
    ivf = result["ivfpq"]["sweep"]
    assert [s["nprobe"] for s in ivf][:3] == [1, 2, 4]
    assert ivf[-1]["recall@10"] >= ivf[0]["recall@10"] and ivf[-1]["recall@10"] > 0.5
    assert all(s["qps"] > 0 for s in ivf + result["hnsw"]["sweep"])
    (tmp_path / "search.json").write_text(json.dumps(result))
    assert_chart(plots.redraw(tmp_path / "search.json"))


def test_redraw_names_what_it_cannot_draw(plots, tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not the results of encode.py, serve.py or search.py"):
        plots.redraw(tmp_path / "x.json")
