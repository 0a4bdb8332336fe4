"""CLI: `sentembed eval sts|retrieval|triplets PATH`: a table on the terminal, JSON with --output."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..io import atomic_write

DEFAULT_MODEL = "all-mpnet-base-v2"


def _report(name: str, model: str, result: dict, primary: str, seconds: float, output: Optional[Path]) -> None:
    rows = [(k, v) for k, v in result.items() if isinstance(v, float)]
    width = max(len(k) for k, _ in rows)
    typer.echo(f"{name} · {model} · {seconds:.0f} s")
    for k, v in rows:
        typer.echo(f"  {k.ljust(width)}  {v:.5f}{'  <- primary' if k == primary else ''}")
    if output:
        data = {"task": name, "model": model, "primary_metric": primary, "seconds": round(seconds, 1), "metrics": result}
        with atomic_write(output, "w") as f:  # a reader never sees half a report
            f.write(json.dumps(data, indent=2))
        typer.echo(f"wrote {output}", err=True)


# How to load the model, set once for every eval command (sentembed eval --dtype bfloat16 sts ...).
_load_options: dict = {}
# `eval retrieval --mode` (and --rerank) measures a search index; evaluation does not import
# search, so the top-level command line, which joins the two, sets this to sentembed.search's
# IndexRetriever.
index_retriever: Optional[Callable[..., Any]] = None


def _run(evaluator, model: str, batch_size: int) -> tuple[dict, float]:
    import sentembed

    enc = sentembed.load(model, **_load_options)
    evaluator.batch_size = batch_size
    start = time.perf_counter()
    result = evaluator(enc)
    return result, time.perf_counter() - start


def _reranker(name: Optional[str]) -> Any:
    """The cross-encoder of --rerank (None without it), in the --dtype of the eval command."""
    if name is None:
        return None
    import sentembed

    try:
        return sentembed.load_cross_encoder(name, dtype=_load_options.get("dtype"))
    except (FileNotFoundError, ValueError) as err:  # no such model, or a bi-encoder given
        raise typer.BadParameter(f"--rerank: {err}") from None


def _evaluate_file(kind: str, evaluator_class, path: Path, model: str, batch_size: int, output: Optional[Path]) -> None:
    e = evaluator_class.from_file(path, show_progress=True)
    result, secs = _run(e, model, batch_size)
    _report(f"{kind}:{path.name}", model, result, e.primary_metric, secs, output)


def register(app: typer.Typer) -> None:
    """Add the `eval` commands to the `sentembed` app."""
    ev = typer.Typer(help="Evaluate a model on STS, retrieval (BEIR) or triplet data.", no_args_is_help=True)
    app.add_typer(ev, name="eval")

    @ev.callback()
    def load_options(
        dtype: Optional[str] = typer.Option(None, help="float32 (default), bfloat16 or float16"),
        backend: str = typer.Option("torch", help="torch, onnx or openvino"),
        quantize: Optional[str] = typer.Option(None, help="int8"),
        file_name: Optional[str] = typer.Option(None, "--file-name", help="A published ONNX/OpenVINO file"),
    ) -> None:
        """Options here apply to the model of the command that follows."""
        _load_options.update(dtype=dtype, backend=backend, quantize=quantize, file_name=file_name)

    @ev.command("sts")
    def sts(path: Path, model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"), batch_size: int = 32,
            output: Optional[Path] = typer.Option(None, "--output", "-o")) -> None:
        """STS TSV (STS Benchmark layout): Spearman and Pearson per similarity."""
        from .sts import STSEvaluator

        _evaluate_file("sts", STSEvaluator, path, model, batch_size, output)

    @ev.command("retrieval")
    def retrieval(path: Path, split: str = "test", model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"),
                  k: str = typer.Option("1,3,5,10,100,1000", help="Cut-offs, comma separated."),
                  batch_size: int = 32, limit_queries: Optional[int] = typer.Option(None, help="Evaluate the first N judged queries only."),
                  save_embeddings: Optional[Path] = typer.Option(None, help="Also save query and corpus embeddings (.npz) here."),
                  mode: Optional[str] = typer.Option(None, help="dense | lexical | hybrid: rank through a temporary "
                                                     "search index (default: exact dense ranking of whole texts)"),
                  alpha: Optional[float] = typer.Option(None, help="hybrid: weigh normalised scores, dense alpha : lexical 1-alpha (default: RRF)"),
                  chunk_tokens: str = typer.Option("auto", help="--mode: passage window in tokens, 'auto' (fits the model) or 'none'"),
                  chunk_overlap: Optional[int] = typer.Option(None, help="--mode: tokens shared by consecutive windows (default: a sixth)"),
                  rerank: Optional[str] = typer.Option(None, help="A cross-encoder (name or directory) that reorders "
                                                       "each query's best --rerank-top-k documents; ranks through "
                                                       "the index (--mode, default dense)"),
                  rerank_top_k: Optional[int] = typer.Option(None, min=1, help="--rerank: documents reranked per query "
                                                             "(default 100); the run holds no more"),
                  rerank_alpha: Optional[float] = typer.Option(None, min=0.0, max=1.0, help="--rerank: blend the "
                                                               "reranker's normalised scores (alpha) with the search's"),
                  output: Optional[Path] = typer.Option(None, "--output", "-o")) -> None:
        """BEIR folder (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv): nDCG, MRR, MAP, Recall, P, accuracy @k."""
        from .retrieval import RetrievalEvaluator

        retriever = None
        if (rerank_top_k is not None or rerank_alpha is not None) and rerank is None:
            raise typer.BadParameter("--rerank-top-k and --rerank-alpha need --rerank (the cross-encoder that reranks)")
        if mode is not None or rerank is not None:
            if index_retriever is None:
                raise typer.BadParameter("--mode and --rerank need sentembed.search (run this through the `sentembed` "
                                         "command)")
            tokens = None if chunk_tokens == "none" else chunk_tokens if chunk_tokens == "auto" else int(chunk_tokens)
            try:
                retriever = index_retriever(mode=mode or "dense", alpha=alpha, chunk_tokens=tokens,
                                            chunk_overlap=chunk_overlap, rerank=_reranker(rerank),
                                            rerank_top_k=rerank_top_k, rerank_alpha=rerank_alpha)
            except ValueError as err:
                raise typer.BadParameter(str(err)) from None
        e = RetrievalEvaluator.from_beir(path, split=split, k_values=[int(x) for x in k.split(",")], show_progress=True,
                                         retriever=retriever)
        if limit_queries:
            keep = list(e.qrels)[:limit_queries]
            e.qrels = {q: e.qrels[q] for q in keep}
            e.queries = {q: e.queries[q] for q in keep}
        result, secs = _run(e, model, batch_size)
        if save_embeddings and e.last_embeddings:
            import numpy as np

            np.savez(save_embeddings, queries=e.last_embeddings[0], corpus=e.last_embeddings[1],
                     query_ids=np.array(list(e.queries)), corpus_ids=np.array(list(e.corpus)))
        _report(f"retrieval:{path.name}:{split}", model if rerank is None else f"{model} reranked by {rerank}", result,
                e.primary_metric, secs, output)

    @ev.command("triplets")
    def triplets(path: Path, model: str = typer.Option(DEFAULT_MODEL, "--model", "-m"), batch_size: int = 32,
                 output: Optional[Path] = typer.Option(None, "--output", "-o")) -> None:
        """Triplet JSON lines ({"anchor","positive","negative"}): accuracy per similarity."""
        from .triplets import TripletEvaluator

        _evaluate_file("triplets", TripletEvaluator, path, model, batch_size, output)
