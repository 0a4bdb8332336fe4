"""DDP on CPU with gloo: 2 processes give the loss and gradients of one process on the whole
batch, with in-batch negatives gathered across ranks (their gradients flowing back)."""
from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from support import no_dropout

PAIRS = [(f"question {i} about {w}", f"answer {i} on {w}") for i, w in
         enumerate(["beer", "hops", "coffee", "grind", "data", "malt", "roast", "yeast"] * 4)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embed(enc, rows):
    return [enc.pipeline(enc.tokenize([r[c] for r in rows]))["sentence_embedding"] for c in range(2)]


def _worker(rank: int, world: int, port: int, model: str, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    import sentembed
    from sentembed.training import TrainConfig, Trainer, TrainDataset, make_loss

    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)
    try:
        enc = sentembed.load(model)
        no_dropout(enc)
        enc.pipeline.train()
        result = {}
        for symmetric in (False, True):
            # one batch by hand: this rank's half, gathered negatives, grads all-reduced as the trainer does
            loss = make_loss("mnrl", {"symmetric": symmetric})
            value = loss(_embed(enc, PAIRS[rank * 4:(rank + 1) * 4]))
            value.backward()
            t = Trainer(enc, [TrainDataset.from_rows("p", PAIRS)], loss,
                        TrainConfig(output_dir=f"{out}/run", batch_size=4, max_steps=3, lr=1e-3, show_progress=False))
            t._sync_grads()
            total = value.detach().clone()
            torch.distributed.all_reduce(total)
            result[symmetric] = {"loss": total / world, "grads": {
                n: p.grad.clone() for n, p in enc.pipeline.named_parameters() if p.grad is not None}}
            enc.pipeline.zero_grad(set_to_none=True)
        # the whole trainer for 3 steps (symmetric loss)
        t.train()
        if rank == 0:
            torch.save({"manual": result, "weights": enc.pipeline.state_dict(),
                        "log": [e["loss"] for e in t.log if "loss" in e]}, f"{out}/ddp.pt")
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_processes_equal_one_on_the_whole_batch(tiny_model, tmp_path):
    import sentembed
    from sentembed.training import TrainConfig, Trainer, TrainDataset, make_loss

    mp.spawn(_worker, args=(2, _free_port(), str(tiny_model), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    enc = sentembed.load(str(tiny_model))
    no_dropout(enc)
    enc.pipeline.train()
    for symmetric in (False, True):
        value = make_loss("mnrl", {"symmetric": symmetric})(_embed(enc, PAIRS[:8]))
        value.backward()
        assert ddp["manual"][symmetric]["loss"].item() == pytest.approx(value.item(), abs=1e-5)
        for n, p in enc.pipeline.named_parameters():
            if p.grad is not None:
                assert torch.allclose(ddp["manual"][symmetric]["grads"][n], p.grad, atol=1e-5), (symmetric, n)
        enc.pipeline.zero_grad(set_to_none=True)
    t = Trainer(enc, [TrainDataset.from_rows("p", PAIRS)], make_loss("mnrl", {"symmetric": True}),
                TrainConfig(output_dir=str(tmp_path / "single"), batch_size=8, max_steps=3, lr=1e-3, show_progress=False))
    t.train()
    assert ddp["log"] == pytest.approx([e["loss"] for e in t.log if "loss" in e], abs=1e-5)
    for k, v in enc.pipeline.state_dict().items():
        assert torch.allclose(ddp["weights"][k], v, atol=1e-5), k
