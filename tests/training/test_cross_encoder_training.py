"""Training a cross-encoder (reranker): the losses against their formulas on plain tensors,
and a few trainer steps on a tiny random MPNet that lower the loss and save a model that
sentence-transformers' CrossEncoder loads with the same scores."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import no_dropout

from sentembed.training import TrainConfig, TrainDataset, Trainer, make_loss, train
from sentembed.training.cross_encoder_losses import BinaryCrossEntropyLoss, ListNetLoss
from sentembed.training.run import load_reranker

TOPICS = ["beer", "hops", "coffee", "grind", "data", "science", "malt", "roast"]
QUERIES = [f"what is question {i} about {w}" for i, w in enumerate(TOPICS * 4)]
POSITIVES = [f"an answer on {w} and {w}" for w in TOPICS * 4]
NEGATIVES = [f"the dog runs in the park {i}" for i in range(len(QUERIES))]


def fixed_scorer(table: dict[tuple[str, str], float]):
    def score(queries, documents):
        return torch.tensor([table[(q, d)] for q, d in zip(queries, documents)], requires_grad=True)
    return score


def test_bce_is_its_formula():
    logits = torch.tensor([2.0, -1.0, 0.3])
    y = torch.tensor([1.0, 0.0, 0.5])
    pairs = [("q", f"d{i}") for i in range(3)]
    score = fixed_scorer({p: float(s) for p, s in zip(pairs, logits)})
    got = BinaryCrossEntropyLoss()(score, [[q for q, _ in pairs], [d for _, d in pairs]], y)
    expected = -(y * torch.log(torch.sigmoid(logits)) + (1 - y) * torch.log(1 - torch.sigmoid(logits))).mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    weighted = BinaryCrossEntropyLoss(pos_weight=3.0)(score, [[q for q, _ in pairs], [d for _, d in pairs]], y)
    expected = -(3 * y * torch.log(torch.sigmoid(logits)) + (1 - y) * torch.log(1 - torch.sigmoid(logits))).mean()
    assert float(weighted) == pytest.approx(float(expected), rel=1e-6)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\]"):
        BinaryCrossEntropyLoss()(score, [["q"] * 3, ["d0", "d1", "d2"]], torch.tensor([1.0, 2.0, 0.0]))


def test_listnet_is_its_formula_with_each_list_in_place():
    rng = np.random.default_rng(0)
    queries = ["q0", "q1"]
    docs = [["p0", "p1"], ["n00", "n01"], ["n10", "n11"]]   # columns: positive, negative 1, negative 2
    table = {(q, docs[j][i]): float(rng.normal()) for i, q in enumerate(queries) for j in range(3)}
    got = ListNetLoss()(fixed_scorer(table), [queries, *docs])
    logits = torch.tensor([[table[(q, docs[j][i])] for j in range(3)] for i, q in enumerate(queries)])
    target = torch.tensor([1.0, 0.0, 0.0]).softmax(0)
    expected = -(target * logits.log_softmax(1)).sum(1).mean()
    assert float(got) == pytest.approx(float(expected), rel=1e-6)
    hot = ListNetLoss(temperature=0.5)(fixed_scorer(table), [queries, *docs])
    assert float(hot) == pytest.approx(float(-(target * (logits / 0.5).log_softmax(1)).sum(1).mean()), rel=1e-6)


def test_make_loss_knows_them_and_checks_columns():
    assert isinstance(make_loss("BinaryCrossEntropyLoss"), BinaryCrossEntropyLoss)
    assert isinstance(make_loss("listnet", {"temperature": 2}), ListNetLoss)
    with pytest.raises(ValueError, match="at least 3 text columns"):
        make_loss("listnet").check_columns(2, "pairs")
    with pytest.raises(ValueError, match="no embeddings to truncate"):
        make_loss("bce", {"matryoshka_dims": [16]})


def mean_bce(reranker, queries, documents, labels) -> float:
    logits = torch.from_numpy(reranker.predict(list(zip(queries, documents)), activation=False))
    return float(F.binary_cross_entropy_with_logits(logits, torch.tensor(labels)))


def test_bce_steps_lower_the_loss_and_the_reference_loads_the_result(tiny_model, tmp_path):
    st = pytest.importorskip("sentence_transformers")
    queries, documents = QUERIES * 2, POSITIVES + NEGATIVES
    labels = [1.0] * len(POSITIVES) + [0.0] * len(NEGATIVES)
    reranker = load_reranker(str(tiny_model), seed=0)
    no_dropout(reranker)
    before = mean_bce(reranker, queries, documents, labels)
    data = TrainDataset.from_rows("labelled", list(zip(queries, documents)), labels)
    config = TrainConfig(model=str(tiny_model), output_dir=str(tmp_path / "run"), loss="bce", batch_size=16,
                         max_steps=20, lr=1e-2, warmup_steps=1, log_steps=1, show_progress=False, seed=1,
                         precision="bf16", save_steps=10)
    result = Trainer(reranker, [data], make_loss("bce"), config).train()
    after = mean_bce(reranker, queries, documents, labels)
    assert after < before - 0.2, (before, after)
    pairs = list(zip(queries[:6], documents[:6]))
    ref = st.CrossEncoder(str(result.output_dir), device="cpu")
    np.testing.assert_allclose(ref.predict(pairs), reranker.predict(pairs), atol=1e-5)
    card = (result.output_dir / "README.md").read_text()
    for needle in ["pipeline_tag: text-ranking", "Cross Encoder", "BinaryCrossEntropyLoss", "| Step |"]:
        assert needle in card, needle


def test_listnet_through_train_with_a_checkpoint_and_resume(tiny_model, tmp_path):
    rows = [{"query": q, "positive": p, "negative_1": n, "negative_2": NEGATIVES[(i + 3) % len(NEGATIVES)]}
            for i, (q, p, n) in enumerate(zip(QUERIES, POSITIVES, NEGATIVES))]
    data = tmp_path / "tuples.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    base = dict(model=str(tiny_model), output_dir=str(tmp_path / "run"), loss="listnet", batch_size=8, lr=2e-3,
                datasets=[{"path": str(data), "columns": ["query", "positive", "negative_1", "negative_2"]}],
                log_steps=1, show_progress=False, seed=3, save_steps=2)
    first = train(TrainConfig(**base, max_steps=4))
    losses = [e["loss"] for e in first.log if "loss" in e]
    assert len(losses) == 4 and all(np.isfinite(losses))
    resumed = train(TrainConfig(**base, max_steps=6, resume=True))
    assert resumed.steps == 6
    with pytest.raises(ValueError, match="trains a cross-encoder; the evaluators score embeddings"):
        train(TrainConfig(**base, max_steps=1,
                          evaluators=[{"type": "TripletEvaluator", "triplets": [["a", "b", "c"]]}]))
