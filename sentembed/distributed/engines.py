"""`embed_corpus`: the plan of corpus.py run here (engine="local") or on Ray (engine="ray").

On Ray, the blocks still to do become a Ray Dataset of block descriptions; `map_batches` on
an actor pool hands them one at a time to `ShardWriter` actors, each holding one model, which
read their block, embed it and write its shard. Ray restarts a dead actor and retries its
block; the shard's deterministic name and atomic rename make the retry harmless. The driver
then checks every planned shard is there with the right row count.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Sequence

from sentembed.distributed.corpus import (
    Block, Fields, check_manifest, embed_block, finish, input_files, plan_blocks,
)

BeforeRename = Callable[[str, Path], None]


class ShardWriter:
    """A Ray Data actor: one model, loaded once, embedding one block per call."""

    def __init__(self, model: str, outdir: str, fields: Fields, batch_size: int, with_text: bool,
                 device: str, threads: int, before_rename: BeforeRename | None = None) -> None:
        import torch

        import sentembed

        torch.set_num_threads(max(1, threads))  # as many as the actor's CPUs, so actors do not fight
        self.encoder = sentembed.load(model, device=device)
        self.outdir, self.fields, self.batch_size, self.with_text = Path(outdir), fields, batch_size, with_text
        self.before_rename = before_rename

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        names, rows = [], []
        for i in range(len(batch["path"])):
            block = Block(**{k: _scalar(batch[k][i]) for k in Block.__dataclass_fields__})
            rows.append(embed_block(self.encoder, block, self.outdir, self.fields, self.batch_size,
                                    self.with_text, self.before_rename))
            names.append(block.name)
        return {"name": names, "rows": rows}


def _scalar(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def run_local(model: str | Any, blocks: Sequence[Block], outdir: Path, fields: Fields, *, batch_size: int = 32,
              with_text: bool = False, device: str | None = None, progress: bool = True) -> int:
    """Every block in this process, with one model; rows written."""
    import sentembed
    from tqdm.auto import tqdm

    encoder = sentembed.load(model, device=device) if isinstance(model, (str, Path)) else model
    written = 0
    for block in tqdm(blocks, desc="shards", unit="shard", disable=not progress):
        written += embed_block(encoder, block, outdir, fields, batch_size, with_text)
    return written


def run_ray(model: str, blocks: Sequence[Block], outdir: Path, fields: Fields, *, batch_size: int = 32,
            with_text: bool = False, device: str = "cpu", address: str | None = None, actors: int | None = None,
            cpus_per_actor: float = 1, gpus_per_actor: float = 0, before_rename: BeforeRename | None = None) -> int:
    """Every block on a Ray cluster (a local one when no address is given and none is running)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False)
    if not blocks:
        return 0
    if actors is None:  # one actor per cpus_per_actor CPUs of the cluster, at most one per block
        actors = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_actor, 1e-9)))
    actors = max(1, min(actors, len(blocks)))
    ds = ray.data.from_items([b.to_dict() for b in blocks], override_num_blocks=len(blocks))
    result = ds.map_batches(
        ShardWriter,
        fn_constructor_kwargs=dict(model=str(model), outdir=str(outdir), fields=fields, batch_size=batch_size,
                                   with_text=with_text, device=device, threads=int(max(1, cpus_per_actor)),
                                   before_rename=before_rename),
        # Ray Data restarts a dead actor and retries its block by default (max_restarts and
        # max_task_retries -1); a Python error in a block is not retried: it ends the job.
        batch_size=1, concurrency=actors, num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
    )
    return sum(int(r["rows"]) for r in result.take_all())


def embed_corpus(inputs: Sequence[str | Path], outdir: str | Path, model: str, *, engine: str = "local",
                 text_fields: Sequence[str] = ("text",), id_field: str | None = None, rows_per_shard: int = 10_000,
                 batch_size: int = 32, with_text: bool = False, overwrite: bool = False, device: str | None = None,
                 **ray_options: Any) -> dict[str, Any]:
    """Embed every row of the inputs into Parquet shards (id, embedding) under outdir.

    Safe to run again: done shards are skipped, so a stopped job resumes. Returns a summary:
    rows, shards, rows written by this run, seconds. `ray_options` go to `run_ray`."""
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    started = time.perf_counter()
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    files = input_files(inputs)
    blocks = plan_blocks(files, rows_per_shard)
    fields = Fields(tuple(text_fields), id_field)
    check_manifest(out, {"model": str(model), "files": [str(f) for f in files], "rows_per_shard": rows_per_shard,
                         "text_fields": list(text_fields), "id_field": id_field, "with_text": with_text}, overwrite)
    todo = [b for b in blocks if not (out / b.name).exists()]
    if engine == "local":
        written = run_local(model, todo, out, fields, batch_size=batch_size, with_text=with_text, device=device)
    else:
        written = run_ray(str(model), todo, out, fields, batch_size=batch_size, with_text=with_text,
                          device=device or "cpu", **ray_options)
    summary = finish(out, blocks)
    return {**summary, "written": written, "skipped_shards": len(blocks) - len(todo),
            "seconds": round(time.perf_counter() - started, 3), "outdir": str(out)}
