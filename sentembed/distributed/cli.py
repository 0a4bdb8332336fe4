"""`sentembed embed-corpus INPUT... -o OUTDIR --engine ray|local [--address ray://...]`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


def register(app: typer.Typer) -> None:
    """Add `embed-corpus` to the CLI."""

    @app.command("embed-corpus")
    def embed_corpus_command(
        inputs: List[Path] = typer.Argument(..., help="Parquet / JSON-lines files, or folders of them."),
        output: Path = typer.Option(..., "-o", "--output", help="Folder for the Parquet shards (id, embedding)."),
        model: str = typer.Option("all-mpnet-base-v2", "-m", "--model", help="Model name or directory."),
        engine: str = typer.Option("local", help="local: this process; ray: a Ray cluster."),
        address: Optional[str] = typer.Option(None, help="Ray address (ray://HOST:10001 or auto); none starts a local Ray."),
        text_field: List[str] = typer.Option(["text"], "--text-field", help="Field(s) joined into the text; repeat."),
        id_field: Optional[str] = typer.Option(None, help="Id field; default 'id', else '_id', else FILE-ROW."),
        rows_per_shard: int = typer.Option(10_000, help="Rows per input block and output shard."),
        batch_size: int = typer.Option(32, help="encode batch size."),
        actors: Optional[int] = typer.Option(None, help="Ray actors (one model each); default: CPUs / cpus-per-actor."),
        cpus_per_actor: float = typer.Option(1.0, help="CPUs per Ray actor (also its torch threads)."),
        gpus_per_actor: float = typer.Option(0.0, help="GPUs per Ray actor (use with --device cuda)."),
        device: Optional[str] = typer.Option(None, help="Torch device for the model."),
        with_text: bool = typer.Option(False, help="Also store the text in the shards."),
        index: Optional[Path] = typer.Option(None, "--index", help="Then build a search index from the shards here."),
        overwrite: bool = typer.Option(False, help="Discard shards of an earlier, different run in OUTPUT."),
    ) -> None:
        """Embed a corpus into Parquet shards, here or on Ray; safe to re-run (done shards are skipped)."""
        from sentembed.distributed.engines import embed_corpus

        ray_options = {}
        if engine == "ray":
            ray_options = dict(address=address, actors=actors, cpus_per_actor=cpus_per_actor,
                               gpus_per_actor=gpus_per_actor)
        summary = embed_corpus(inputs, output, model, engine=engine, text_fields=text_field, id_field=id_field,
                               rows_per_shard=rows_per_shard, batch_size=batch_size,
                               with_text=with_text or index is not None, overwrite=overwrite, device=device,
                               **ray_options)
        if index is not None:
            summary["index"] = _build_index(output, index, model, device)
        typer.echo(json.dumps(summary, indent=2))


def _build_index(shards: Path, path: Path, model: str, device: Optional[str]) -> dict:
    """An Index from the shards' vectors and texts, without embedding anything again.

    The one place distributed touches search: imported here, lazily, so the package itself
    keeps to the layer rule (uses do not import one another)."""
    import pyarrow.parquet as pq

    import sentembed
    from sentembed.search.index import Index

    idx = Index.create(path, sentembed.load(model, device=device))
    for shard in sorted(shards.glob("part-*.parquet")):
        table = pq.read_table(shard)
        col = table.column("embedding").combine_chunks()
        vectors = col.flatten().to_numpy(zero_copy_only=False).reshape(len(table), col.type.list_size)
        idx.add(table.column("text").to_pylist(), ids=table.column("id").to_pylist(), vectors=vectors)
    return idx.info()
