"""The plan and the local engine: deterministic shards, vectors equal to encode, resume,
a crash before the rename leaves nothing counted, mismatched runs refused."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sentembed.distributed import embed_corpus, read_embeddings
from sentembed.distributed.corpus import Fields, input_files, plan_blocks, read_block


def test_plan_is_deterministic_and_covers_every_row(corpus, expected):
    files = input_files([corpus])
    blocks = plan_blocks(files, 64)
    assert blocks == plan_blocks(input_files([corpus / "scifact.parquet", corpus / "stsb.jsonl"]), 64)
    assert len({b.name for b in blocks}) == len(blocks)
    got_ids, got_texts = [], []
    for b in blocks:
        ids, texts = read_block(b, Fields())
        got_ids += ids
        got_texts += texts
    assert (got_ids, got_texts) == expected(corpus)


def test_local_engine_equals_encode_and_resumes(corpus, tiny_model, tiny_encoder, tmp_path, expected):
    out = tmp_path / "out"
    fields = ("title", "text")
    summary = embed_corpus([corpus], out, str(tiny_model), text_fields=fields, rows_per_shard=100)
    ids, texts = expected(corpus, fields)
    assert summary["rows"] == len(ids) == summary["written"]
    got_ids, vectors = read_embeddings(out)
    assert got_ids == ids
    np.testing.assert_allclose(vectors, tiny_encoder.encode(texts), atol=1e-5)
    again = embed_corpus([corpus], out, str(tiny_model), text_fields=fields, rows_per_shard=100)
    assert again["written"] == 0 and again["skipped_shards"] == again["shards"]
    with pytest.raises(ValueError, match="another run"):
        embed_corpus([corpus], out, str(tiny_model), text_fields=fields, rows_per_shard=50)


def test_crash_before_rename_is_not_a_shard(corpus, tiny_encoder, tmp_path):
    from sentembed.distributed.corpus import embed_block, finish

    blocks = plan_blocks(input_files([corpus]), 100)

    seen = []

    def crash(name, tmp):
        seen.append(tmp.stat().st_size)  # the shard is written whole under its temporary name
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        embed_block(tiny_encoder, blocks[0], tmp_path, Fields(("title", "text")), before_rename=crash)
    assert seen[0] > 0 and not (tmp_path / blocks[0].name).exists()
    assert not list(tmp_path.glob(".part-*.tmp"))  # an exception removes it (io.atomic_write)
    # a killed process leaves it (test_ray kills one for real); finish() removes what is left
    (tmp_path / f".{blocks[0].name}.0123456789ab.tmp").write_bytes(b"half a shard")
    for b in blocks:
        embed_block(tiny_encoder, b, tmp_path, Fields(("title", "text")))
    assert finish(tmp_path, blocks)["rows"] == sum(b.rows for b in blocks)
    assert not list(tmp_path.glob(".part-*.tmp"))


def test_errors_name_the_problem(corpus, tmp_path, tiny_model):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        embed_corpus([tmp_path / "nowhere"], tmp_path / "o", str(tiny_model))
    with pytest.raises(ValueError, match="text fields"):
        embed_corpus([corpus / "stsb.jsonl"], tmp_path / "o2", str(tiny_model), text_fields=["body"])


def test_cli_embeds_and_builds_an_index(corpus, tiny_model, tiny_encoder, tmp_path):
    from typer.testing import CliRunner

    from sentembed.cli import app

    out, index = tmp_path / "shards", tmp_path / "index"
    result = CliRunner().invoke(app, ["embed-corpus", str(corpus / "stsb.jsonl"), "-o", str(out), "-m", str(tiny_model),
                                      "--rows-per-shard", "100", "--index", str(index)])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 250 and summary["shards"] == 3 and summary["index"]["count"] == 250
    from sentembed.search.index import Index

    hits = Index.open(index, enc=tiny_encoder).search("A man is playing a flute.", top_k=1)
    ids, vectors = read_embeddings(out)
    scores = vectors @ tiny_encoder.encode("A man is playing a flute.")
    # Scores, not ids: the corpus holds repeated sentences, and either copy is a right answer.
    assert abs(hits[0].score - scores.max()) <= 1e-5
    assert scores[list(ids).index(hits[0].id)] >= scores.max() - 1e-5
