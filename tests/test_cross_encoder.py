"""The cross-encoder against sentence-transformers' CrossEncoder on tiny random-weight
MPNetForSequenceClassification models (1 and 3 labels, sigmoid and identity): same scores
within 1e-5, saved here and loaded there and back, and clear errors on bad input."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from support import build_cross_encoder

import sentembed
from sentembed.cross_encoder import CrossEncoder, load_cross_encoder
from sentembed.model.classifier import ModelKindError

st = pytest.importorskip("sentence_transformers")

PAIRS = [
    ("a man is eating food", "a man is eating a meal"),
    ("the dog runs", "a cat sits on the table in the small red house by the road"),
    ("what is the interest rate today", "rates rose today and stocks fell as the market said the bank"),
    ("x", "y"),
    ("children playing in the park with a ball", "a boy and a girl play ball in the park while a dog runs"),
]


CASES = {
    "1-sigmoid": dict(num_labels=1),
    "1-identity": dict(num_labels=1, activation=torch.nn.Identity()),
    "3-identity": dict(num_labels=3),
    "3-sigmoid": dict(num_labels=3, activation=torch.nn.Sigmoid()),
}


@pytest.fixture(scope="module", params=list(CASES))
def tiny_ce(request, tmp_path_factory) -> Path:
    return build_cross_encoder(tmp_path_factory.mktemp("ce"), **CASES[request.param])


def reference(path: Path):
    return st.CrossEncoder(str(path), device="cpu")


def test_scores_equal_the_reference_single_and_mixed_batches(tiny_ce):
    ours, ref = load_cross_encoder(tiny_ce, device="cpu"), reference(tiny_ce)
    expected = ref.predict(PAIRS, batch_size=3)
    got = ours.predict(PAIRS, batch_size=3)
    assert got.shape == np.asarray(expected).shape
    np.testing.assert_allclose(got, expected, atol=1e-5)
    # one pair alone, and raw logits against the reference's identity activation
    np.testing.assert_allclose(ours.predict(PAIRS[1]), ref.predict(PAIRS[1]), atol=1e-5)
    np.testing.assert_allclose(ours.predict(PAIRS, activation=False),
                               ref.predict(PAIRS, activation_fn=torch.nn.Identity()), atol=1e-5)


def test_long_pairs_are_truncated_as_the_reference_does(tmp_path):
    path = build_cross_encoder(tmp_path, max_length=24)
    long = " ".join(["the dog runs in the park"] * 20)
    pairs = [(long, "a cat"), ("a cat", long), (long, long)]
    np.testing.assert_allclose(load_cross_encoder(path, device="cpu").predict(pairs),
                               reference(path).predict(pairs), atol=1e-5)


def test_saved_here_loads_there_with_the_same_scores(tiny_ce, tmp_path):
    ours = load_cross_encoder(tiny_ce, device="cpu")
    ours.save(tmp_path / "saved")
    again = reference(tmp_path / "saved")
    np.testing.assert_allclose(again.predict(PAIRS), ours.predict(PAIRS), atol=1e-5)
    assert again.num_labels == ours.num_labels
    assert type(again.activation_fn).__name__ == ours.activation.rsplit(".", 1)[-1]


def test_old_layout_without_modules_json_loads(tmp_path):
    # sentence-transformers 4 and 5 kept the activation in config.json and wrote no modules.json
    path = build_cross_encoder(tmp_path, activation=torch.nn.Identity())
    for name in ("modules.json", "config_sentence_transformers.json", "sentence_bert_config.json"):
        (path / name).unlink()
    config = json.loads((path / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity", "version": "5.0.0"}
    (path / "config.json").write_text(json.dumps(config))
    ours = load_cross_encoder(path, device="cpu")
    assert ours.activation.endswith("Identity")
    np.testing.assert_allclose(ours.predict(PAIRS), reference(path).predict(PAIRS), atol=1e-5)


def test_rank_sorts_by_score_and_needs_a_label_with_several(tmp_path):
    one = load_cross_encoder(build_cross_encoder(tmp_path / "one"), device="cpu")
    docs = [d for _, d in PAIRS]
    ranked = one.rank("a man is eating", docs, top_k=3)
    expected = st.CrossEncoder(str(tmp_path / "one" / "model"), device="cpu").rank("a man is eating", docs, top_k=3)
    assert [r["corpus_id"] for r in ranked] == [r["corpus_id"] for r in expected]
    assert [r["text"] for r in ranked] == [docs[r["corpus_id"]] for r in ranked]
    assert "text" not in one.rank("q", docs, return_documents=False)[0]
    three = load_cross_encoder(build_cross_encoder(tmp_path / "three", num_labels=3), device="cpu")
    with pytest.raises(ValueError, match="3 labels.*contradiction, entailment, neutral.*label="):
        three.rank("q", docs)
    by_name = three.rank("q", docs, label="entailment")
    assert by_name == three.rank("q", docs, label=1)
    assert by_name[0]["score"] == pytest.approx(three.predict([("q", docs[by_name[0]["corpus_id"]])])[0, 1], abs=1e-6)
    with pytest.raises(ValueError, match="unknown label 'maybe'"):
        three.rank("q", docs, label="maybe")


@pytest.mark.parametrize("bad, message", [
    ("just a string", "pairs"),
    ([("q", "d", "extra")], "pair 0 has 3 items"),
    ([("q", "d"), "not a pair"], "pair 1 is a str"),
    ([("q", 3)], "pair 0 item 1 is int"),
    (None, "pairs, got NoneType"),
])
def test_pairs_that_are_not_pairs(tmp_path_factory, bad, message):
    ce = load_cross_encoder(build_cross_encoder(tmp_path_factory.mktemp("bad")), device="cpu")
    with pytest.raises(TypeError, match=message):
        ce.predict(bad)


def test_rank_bad_input(tmp_path):
    ce = load_cross_encoder(build_cross_encoder(tmp_path), device="cpu")
    assert ce.predict([]).shape == (0,)
    with pytest.raises(ValueError, match="documents is empty"):
        ce.rank("q", [])
    for top_k in (0, -1, 1.5):
        with pytest.raises(ValueError, match="top_k must be a positive integer"):
            ce.rank("q", ["d"], top_k=top_k)
    with pytest.raises(TypeError, match="documents must be a list"):
        ce.rank("q", "d")


def test_the_two_kinds_refuse_each_other(tiny_model, tmp_path):
    with pytest.raises(ModelKindError, match="bi-encoder.*Pooling.*sentembed.load"):
        load_cross_encoder(tiny_model)
    path = build_cross_encoder(tmp_path)
    with pytest.raises(ModelKindError, match="cross-encoder.*CrossEncoder.*load_cross_encoder"):
        sentembed.load(path)


def test_from_encoder_gives_a_fresh_head_that_the_reference_loads(tiny_model, tmp_path):
    ce = CrossEncoder.from_encoder(tiny_model, num_labels=1, seed=0)
    assert ce.num_labels == 1 and ce.activation.endswith("Sigmoid")
    ce.save(tmp_path / "fresh")
    np.testing.assert_allclose(reference(tmp_path / "fresh").predict(PAIRS), ce.predict(PAIRS), atol=1e-5)
    # the encoder's weights are the bi-encoder's
    enc = sentembed.load(tiny_model, device="cpu")
    for (name, a), b in zip(ce.pipeline.transformer.mpnet.state_dict().items(),
                            enc.pipeline.transformer.mpnet.state_dict().values()):
        assert torch.equal(a, b), name


def test_bf16_and_int8_stay_close_to_fp32(tmp_path):
    path = build_cross_encoder(tmp_path, activation=torch.nn.Identity())
    fp32 = load_cross_encoder(path, device="cpu").predict(PAIRS)
    bf16 = load_cross_encoder(path, device="cpu", dtype="bfloat16").predict(PAIRS)
    np.testing.assert_allclose(bf16, fp32, atol=0.05)
    from sentembed.backends.int8 import int8_supported

    if not int8_supported():
        pytest.skip("no int8 kernels on this CPU")
    int8 = load_cross_encoder(path, device="cpu", quantize="int8")
    np.testing.assert_allclose(int8.predict(PAIRS), fp32, atol=0.05)
    with pytest.raises(RuntimeError, match="int8"):
        int8.save(tmp_path / "no")
