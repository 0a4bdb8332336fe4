"""The training loop on a tiny random MPNet: resume, NaN stop, errors before training, output."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import sentembed
from sentembed.training import (DataError, TrainConfig, Trainer, TrainDataset, TrainingError, make_loss, train)
from sentembed.training.checkpoint import list_checkpoints
from sentembed.training.evaluate import LossEvaluator

from support import no_dropout

PAIRS = [(f"what is question {i} about {w}", f"an answer {i} on {w}") for i, w in
         enumerate(["beer", "hops", "coffee", "grind", "data", "science", "malt", "roast"] * 12)]
TRIPLETS = [(a, b, PAIRS[(i + 7) % len(PAIRS)][1]) for i, (a, b) in enumerate(PAIRS)]


def cfg(tmp_path, **kw):
    base = dict(output_dir=str(tmp_path / "run"), batch_size=8, max_steps=6, lr=1e-3, warmup_steps=2,
                log_steps=1, show_progress=False, seed=1)
    return TrainConfig(**{**base, **kw})


def weights(enc):
    return {k: v.clone() for k, v in enc.pipeline.state_dict().items()}


def test_resume_is_bit_identical(tiny_model, tmp_path):
    data = [TrainDataset.from_rows("p", PAIRS, weight=2), TrainDataset.from_rows("t", TRIPLETS)]
    enc = sentembed.load(str(tiny_model))
    Trainer(enc, data, make_loss("mnrl"), cfg(tmp_path / "a", model=str(tiny_model))).train()
    full = weights(enc)
    # interrupted: the run dies right after its step-3 checkpoint, then a fresh trainer resumes
    enc2 = sentembed.load(str(tiny_model))

    class Stop(Exception):
        pass

    t = Trainer(enc2, data, make_loss("mnrl"), cfg(tmp_path / "b", save_steps=3))
    real_save = t.save_checkpoint

    def save_then_die():
        path = real_save()
        if t.step == 3:
            raise Stop
        return path
    t.save_checkpoint = save_then_die
    with pytest.raises(Stop):
        t.train()
    torch.manual_seed(12345)      # a resumed run must not depend on the RNG it starts with
    enc3 = sentembed.load(str(tiny_model))
    t3 = Trainer(enc3, data, make_loss("mnrl"), cfg(tmp_path / "b", save_steps=3, resume=True))
    t3.train()
    assert t3.log[0]["step"] == 1 and [e["step"] for e in t3.log if "loss" in e] == list(range(1, 7))
    resumed = weights(enc3)
    assert all(torch.equal(full[k], resumed[k]) for k in full)
    # the ordinary run changed the weights at all
    assert not all(torch.equal(full[k], weights(sentembed.load(str(tiny_model)))[k]) for k in full)


def test_output_loads_in_sentence_transformers_with_identical_embeddings(tiny_model, tmp_path):
    from sentence_transformers import SentenceTransformer

    enc = sentembed.load(str(tiny_model))
    held = TrainDataset.from_rows("held", PAIRS[:16])
    result = Trainer(enc, [TrainDataset.from_rows("p", PAIRS)], make_loss("mnrl", {"symmetric": True}),
                     cfg(tmp_path, eval_steps=3, precision="bf16", model=str(tiny_model)),
                     [LossEvaluator(held, make_loss("mnrl"), 8)]).train()
    out = result.output_dir
    texts = ["a beer question", "coffee grind size", "x"]
    ours = sentembed.load(str(out)).encode(texts)
    ref = SentenceTransformer(str(out), device="cpu").encode(texts)
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    card = (out / "README.md").read_text()
    for needle in ["base_model:", "MultipleNegativesRankingLoss", "symmetric", "Training Logs", "| Step |",
                   "heldout-held/loss", "Framework Versions", "`precision`: bf16", "Size: 96 training rows"]:
        assert needle in card, needle
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "eval" in e] == [3, 6]
    assert result.best_checkpoint is not None and result.best_checkpoint.is_dir()


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tiny_model, tmp_path):
    enc = sentembed.load(str(tiny_model))
    loss = make_loss("mnrl")
    real = loss.forward
    calls = {"n": 0}

    def poisoned(embs, labels=None):
        calls["n"] += 1
        out = real(embs, labels)
        return out * float("nan") if calls["n"] == 5 else out
    loss.forward = poisoned
    t = Trainer(enc, [TrainDataset.from_rows("p", PAIRS)], loss, cfg(tmp_path, save_steps=2))
    with pytest.raises(TrainingError, match=r"loss is nan at step 5 .*Last good checkpoint: .*step-000004"):
        t.train()
    kept = list_checkpoints(tmp_path / "run")
    assert kept[-1].name == "step-000004"
    state = torch.load(kept[-1] / "trainer_state.pt", weights_only=True)
    assert state["step"] == 4
    assert all(torch.isfinite(p).all() for p in enc.pipeline.parameters())


def test_errors_before_training(tiny_model, tmp_path):
    enc = sentembed.load(str(tiny_model))
    with pytest.raises(ValueError, match="TripletLoss needs at least 3 text columns per row, the data has 2"):
        Trainer(enc, [TrainDataset.from_rows("pairs", PAIRS)], make_loss("triplet"), cfg(tmp_path))
    with pytest.raises(DataError, match="dataset 'empty' .* is empty"):
        Trainer(enc, [TrainDataset.from_rows("empty", [])], make_loss("mnrl"), cfg(tmp_path))
    with pytest.raises(DataError, match="weight must be a number > 0"):
        Trainer(enc, [TrainDataset.from_rows("w", PAIRS, weight=0)], make_loss("mnrl"), cfg(tmp_path))
    with pytest.raises(DataError, match="needs a label column"):
        Trainer(enc, [TrainDataset.from_rows("p", PAIRS)], make_loss("cosent"), cfg(tmp_path))
    with pytest.raises(ValueError, match="unknown loss 'contrastive-magic'"):
        train(cfg(tmp_path, loss="contrastive-magic", datasets=[{"path": "x.jsonl"}]))
    f = tmp_path / "empty.jsonl"
    f.write_text("")
    with pytest.raises(DataError, match="is empty"):   # fails before any model is loaded
        train(cfg(tmp_path, model="/nonexistent", datasets=[{"path": str(f)}]))
    assert not (tmp_path / "run").exists()


def test_cached_mnrl_and_accumulation_train(tiny_model, tmp_path):
    """Cached MNRL through the trainer gives the same first update as MNRL (eval-mode dropout off)."""
    results = []
    for name, params in [("mnrl", {}), ("cached_mnrl", {"mini_batch_size": 4})]:
        enc = sentembed.load(str(tiny_model))
        no_dropout(enc)                           # both must compute the same function
        Trainer(enc, [TrainDataset.from_rows("p", PAIRS)], make_loss(name, params),
                cfg(tmp_path / name, max_steps=1, grad_accum=2, gradient_checkpointing=True)).train()
        results.append(weights(enc))
    for k in results[0]:
        assert torch.allclose(results[0][k], results[1][k], atol=1e-5), k


def test_training_draws_its_loss_and_evaluation_and_the_card_shows_them(tiny_model, tmp_path):
    import matplotlib.image

    enc = sentembed.load(str(tiny_model))
    held = TrainDataset.from_rows("held", PAIRS[:16])
    out = Trainer(enc, [TrainDataset.from_rows("p", PAIRS)], make_loss("mnrl"),
                  cfg(tmp_path, eval_steps=2, model=str(tiny_model)), [LossEvaluator(held, make_loss("mnrl"), 8)]
                  ).train().output_dir
    card = (out / "README.md").read_text()
    for name in ("loss.png", "eval.png"):
        image = matplotlib.image.imread(out / name)  # a PNG that decodes, with something drawn on it
        assert image.shape[0] > 200 and image.shape[1] > 300 and image.std() > 0.05, name
        assert f"]({name})" in card, name
    # without evaluators: the loss alone, and the card names no missing chart
    out = Trainer(sentembed.load(str(tiny_model)), [TrainDataset.from_rows("p", PAIRS)], make_loss("mnrl"),
                  cfg(tmp_path / "plain")).train().output_dir
    assert (out / "loss.png").is_file() and not (out / "eval.png").exists()
    card = (out / "README.md").read_text()
    assert "](loss.png)" in card and "eval.png" not in card
