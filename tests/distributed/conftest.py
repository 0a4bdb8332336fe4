"""A small real corpus for the corpus-embedding tests: STS-B sentences as JSON lines and
SciFact abstracts as Parquet, written to a temporary folder (never into the repo), and
`expected(corpus, fields)`, its ids and texts read straight from the files (a fixture:
under --import-mode=importlib test modules cannot import their neighbours)."""
from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="session")
def tiny_encoder(tiny_model):
    import sentembed

    return sentembed.load(str(tiny_model), device="cpu")


@pytest.fixture(scope="session")
def corpus(tmp_path_factory, stsb_dev, data_dir) -> Path:
    """jsonl: 250 STS-B sentences {id, text}; parquet: 130 SciFact docs {_id, title, text} in row groups of 40."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path_factory.mktemp("corpus")
    a, _, _ = stsb_dev
    with open(root / "stsb.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(a[:250]):
            f.write(json.dumps({"id": f"s{i}", "text": text}) + "\n")
            if i == 100:
                f.write("\n")  # a blank line is not a row
    docs = []
    with open(data_dir / "scifact" / "corpus.jsonl", encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append({"_id": d["_id"], "title": d["title"], "text": d["text"][:300]})
            if len(docs) == 130:
                break
    pq.write_table(pa.Table.from_pylist(docs), root / "scifact.parquet", row_group_size=40)
    return root


def expected(corpus, fields=("text",)):
    """ids and texts straight from the files, in plan order (files sorted)."""
    ids, texts = [], []
    for f in sorted(corpus.iterdir()):
        if f.suffix == ".jsonl":
            rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
        else:
            rows = pq.read_table(f).to_pylist()
        ids += [str(r.get("id", r.get("_id"))) for r in rows]
        texts += [" ".join(str(r[k]) for k in fields if r.get(k) is not None).strip() for r in rows]
    return ids, texts


@pytest.fixture(scope="session", name="expected")
def expected_fixture():
    return expected
