"""Real data (skipped without ../shared/data): the StackExchange mixture by the
mpnet_stackexchange_v1 rule; over 10,000 sampled batches each dataset's share matches its weight."""
from __future__ import annotations

import json

from sentembed.training.data import load_data_config, weights_from_lines
from sentembed.training.samplers import MixtureBatchSampler


def test_stackexchange_mixture_shares(data_dir, tmp_path):
    files = {f"{site}_{kind}": data_dir / "stackexchange" / site / f"{kind}.jsonl"
             for site in ("beer", "coffee", "sothakur") for kind in ("title_body", "question_answer")}
    lines = {k: sum(1 for _ in open(p, encoding="utf-8")) for k, p in files.items()}
    weights = weights_from_lines(lines, 100)
    cfg = tmp_path / "data_config.json"
    cfg.write_text(json.dumps([{"name": str(p), "lines": lines[k], "weight": weights[k]} for k, p in files.items()]))
    specs = load_data_config(cfg)
    kinds = {"title_body": ["title", "body"], "question_answer": ["question", "answer"]}
    data = []
    for s, k in zip(specs, files):
        s.columns = kinds["title_body" if "title_body" in k else "question_answer"]
        data.append(s.load())
    assert [len(d) for d in data] == list(lines.values())
    sampler = MixtureBatchSampler([d.rows for d in data], [d.weight for d in data], batch_size=16, seed=0,
                                  num_batches=10_000)
    counts = [0] * len(data)
    for i, rows in sampler:
        counts[i] += 1
        texts = [t for r in rows for t in data[i].rows[r]]
        assert len(texts) == len(set(texts))
    total = sum(d.weight for d in data)
    for d, c in zip(data, counts):
        assert abs(c / 10_000 - d.weight / total) < 0.02, (d.name, c, d.weight)
