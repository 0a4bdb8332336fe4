"""CLI: `sentembed index create|add|search|delete|compact|verify|info|upgrade`, `search`, `mine`, `cluster`, `tag`.

Heavy imports (torch, the model, faiss) happen inside the commands, so `sentembed --help`
stays fast.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NoReturn, Optional

import typer

DEFAULT_MODEL = "all-mpnet-base-v2"
ModelOpt = typer.Option(DEFAULT_MODEL, "--model", "-m", help="Model name or Sentence Transformers directory.")
OutputOpt = typer.Option(None, "--output", "-o", help="Write the result as JSON to this file.")
ModeOpt = typer.Option(None, "--mode", help="dense | lexical | hybrid (default: the index's)")
AlphaOpt = typer.Option(None, "--alpha", help="hybrid: weigh normalised scores, dense alpha : lexical 1-alpha (default: RRF)")
RerankOpt = typer.Option(None, "--rerank", help="A cross-encoder (name or directory) that reorders the hits by its "
                         "score of (query, matched passage); the hits then show its score")
RerankTopKOpt = typer.Option(None, "--rerank-top-k", min=1, help="--rerank: documents retrieved and reranked "
                             "(default: max(top-k, 100); at least --top-k)")
RerankAlphaOpt = typer.Option(None, "--rerank-alpha", min=0.0, max=1.0, help="--rerank: order by the reranker's "
                              "normalised score x alpha + the search's x (1 - alpha) (default: the reranker's alone)")


def chunk_tokens_option(value: str) -> int | str | None:
    """--chunk-tokens: 'auto', 'none' or a number of tokens."""
    if value in ("auto", "none"):
        return None if value == "none" else value
    try:
        return int(value)
    except ValueError:
        raise typer.BadParameter(f"--chunk-tokens takes 'auto', 'none' or a number, got {value!r}") from None


def read_texts(path: Path, text_field: str = "text", id_field: str | None = None) -> tuple[list[str], list[str] | None, list[dict] | None]:
    """Texts from a .jsonl file (objects; `text_field`, optional `id_field`, the rest is
    metadata) or from a plain text file (one text per non-empty line)."""
    if not path.is_file():
        raise typer.BadParameter(f"{path} is not a file")
    if path.suffix in (".jsonl", ".ndjson"):
        texts, ids, metas = [], [], []
        for no, obj in _jsonl(path):
            if text_field not in obj:
                raise typer.BadParameter(f"{path}:{no}: no {text_field!r} field (choose one with --text-field)")
            texts.append(str(obj[text_field]))
            if id_field:
                if obj.get(id_field) in (None, ""):
                    fail(f"{path}:{no}: no {id_field!r} value (every document needs its id)")
                ids.append(str(obj[id_field]))
            metas.append({k: v for k, v in obj.items() if k not in (text_field, id_field)})
        return texts, (ids if id_field else None), metas
    from ..io import read_lines

    try:  # invalid UTF-8 is an error naming the line, as `sentembed encode` makes it
        lines = [ln.strip() for _, ln in read_lines(path, errors="strict")]
    except ValueError as err:
        fail(str(err))
    return [ln for ln in lines if ln], None, None


def _jsonl(path: Path):
    from ..io import read_jsonl

    try:
        yield from read_jsonl(path, errors="strict")
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def fail(message: str) -> NoReturn:
    """End the command with one line on stderr, no traceback."""
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(1)


def _where(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as err:
        fail(f"--where is not JSON ({err})")


def write_json(path: Path, obj: Any) -> None:
    from ..io import atomic_write

    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, indent=2, ensure_ascii=False))
    typer.echo(f"wrote {path}", err=True)


def table(rows: list[list[Any]], header: list[str], width: int = 100) -> str:
    """A plain aligned text table; long cells are cut with an ellipsis."""
    cells = [[_cell(v) for v in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    last = max(10, width - sum(widths[:-1]) - 2 * (len(widths) - 1))
    widths[-1] = min(widths[-1], last)
    fmt = lambda r: "  ".join((c if len(c) <= w else c[: w - 1] + "…").ljust(w) for c, w in zip(r, widths)).rstrip()
    return "\n".join([fmt(header), fmt(["-" * w for w in widths])] + [fmt(r) for r in cells])


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (dict, list)):
        return json.dumps(v, ensure_ascii=False)
    return " ".join(str(v).split())


def _load(model: str):
    import sentembed

    return sentembed.load(model)


def _load_reranker(name: str | None, rerank_top_k: int | None, rerank_alpha: float | None = None) -> Any:
    """The cross-encoder of --rerank (None without it), or one line naming what is wrong."""
    if name is None:
        if rerank_top_k is not None or rerank_alpha is not None:
            fail("--rerank-top-k and --rerank-alpha need --rerank (the cross-encoder that reranks)")
        return None
    import sentembed

    try:
        return sentembed.load_cross_encoder(name)
    except (FileNotFoundError, ValueError) as err:  # no such model, or a bi-encoder given
        fail(f"--rerank: {err}")


def register(app: typer.Typer) -> None:
    """Add the search commands to the `sentembed` app."""
    index_app = typer.Typer(help="A persistent searchable collection in a directory.", no_args_is_help=True)
    app.add_typer(index_app, name="index")

    @index_app.command("create")
    def index_create(path: Path, model: str = ModelOpt,
                     kind: str = typer.Option("exact", help="exact | hnsw | ivfpq"),
                     params: str = typer.Option("{}", help='JSON tuning, e.g. \'{"ef_search": 256}\''),
                     chunk_tokens: str = typer.Option("auto", help="Passage window in tokens: 'auto' (fits the model), "
                                                      "'none' (whole texts) or a number"),
                     chunk_overlap: Optional[int] = typer.Option(None, help="Tokens consecutive windows share (default: a sixth)")) -> None:
        """Create an empty index at PATH for MODEL."""
        from .index import Index

        try:
            idx = Index.create(path, _load(model), kind=kind, chunk_tokens=chunk_tokens_option(chunk_tokens),
                               chunk_overlap=chunk_overlap, **json.loads(params))
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        typer.echo(table([[k, v] for k, v in idx.info().items() if k != "params"], ["field", "value"]))

    @index_app.command("add")
    def index_add(path: Path, file: Path, text_field: str = "text", id_field: Optional[str] = None,
                  batch: int = typer.Option(1000, help="Texts per commit."), batch_size: int = 32) -> None:
        """Embed and add the texts of FILE (.jsonl objects or one text a line); commits every --batch texts."""
        from tqdm import tqdm

        from ..encoder import encode_as
        from .index import Index

        idx = Index.open(path)
        texts, ids, metas = read_texts(file, text_field, id_field)
        with tqdm(total=len(texts), desc="add", unit="text", disable=len(texts) < 100) as bar:
            for s in range(0, len(texts), batch):
                part = texts[s : s + batch]
                spans = idx.chunk(part)
                passages = [t[a:b] for t, doc in zip(part, spans) for a, b in doc]
                vecs = encode_as(idx.encoder, passages, "document", batch_size=batch_size)
                try:
                    idx.add(part, ids[s : s + batch] if ids else None, metas[s : s + batch] if metas else None,
                            vectors=vecs)
                except (ValueError, TypeError) as err:
                    fail(f"{file}: {err}" + (f" ({s} texts were added before)" if s else ""))
                bar.update(len(part))
        typer.echo(f"{len(texts)} added; the index holds {len(idx)}")

    @index_app.command("search")
    def index_search(path: Path, query: str, top_k: int = typer.Option(10, "--top-k", "-k"),
                     where: Optional[str] = typer.Option(None, help='JSON metadata filter, e.g. \'{"lang": "en"}\''),
                     mode: Optional[str] = ModeOpt, alpha: Optional[float] = AlphaOpt,
                     rerank: Optional[str] = RerankOpt, rerank_top_k: Optional[int] = RerankTopKOpt,
                     rerank_alpha: Optional[float] = RerankAlphaOpt, output: Optional[Path] = OutputOpt) -> None:
        """Search the index at PATH for QUERY; each hit shows the passage that matched."""
        from .index import Index

        reranker = _load_reranker(rerank, rerank_top_k, rerank_alpha)
        idx = Index.open(path)
        try:
            hits = idx.search(query, top_k=top_k, where=_where(where), mode=mode, alpha=alpha, rerank=reranker,
                              rerank_top_k=rerank_top_k, rerank_alpha=rerank_alpha)
        except (ValueError, TypeError) as err:
            fail(str(err))
        _print_hits(hits, output)

    @index_app.command("upgrade")
    def index_upgrade(path: Path) -> None:
        """Give an index made before lexical search its lexical table (one atomic commit)."""
        from .index import Index

        done = Index.open(path).upgrade(show_progress=True)
        typer.echo(f"{path}: lexical table built" if done else f"{path}: already up to date")

    @index_app.command("delete")
    def index_delete(path: Path, ids: list[str]) -> None:
        """Delete documents by id."""
        from .index import Index

        try:
            n = Index.open(path).delete(ids)
        except KeyError as err:
            fail(err.args[0])
        typer.echo(f"deleted {n}")

    @index_app.command("compact")
    def index_compact(path: Path) -> None:
        """Rewrite the vectors as one segment without deleted rows (adds merge small segments
        on their own); afterwards nothing of a deleted document stays under PATH."""
        from .index import Index

        idx = Index.open(path)
        replaced = idx.compact()
        info = idx.info()
        typer.echo(f"{path}: {replaced} segments compacted; {info['count']} documents, {info['segments']} segment(s)")

    @index_app.command("verify")
    def index_verify(path: Path) -> None:
        """Check every vector file of the index at PATH against its checksum; exit 1 on damage."""
        from .index import Index

        problems = Index.open(path).verify()
        for problem in problems:
            typer.echo(problem, err=True)
        if problems:
            raise typer.Exit(1)
        typer.echo(f"{path}: intact")

    @index_app.command("info")
    def index_info(path: Path, output: Optional[Path] = OutputOpt) -> None:
        """Model, similarity, kind, counts and size of the index at PATH."""
        from .index import Index

        info = Index.open(path).info()
        if output:
            write_json(output, info)
        typer.echo(table([[k, v] for k, v in info.items()], ["field", "value"]))

    @app.command("search")
    def search_once(query: str, corpus: Path = typer.Option(..., "--corpus", "-c", help=".jsonl or one text a line"),
                    top_k: int = typer.Option(10, "--top-k", "-k"), model: str = ModelOpt,
                    text_field: str = "text", mode: str = typer.Option("dense", help="dense | lexical | hybrid"),
                    alpha: Optional[float] = AlphaOpt, rerank: Optional[str] = RerankOpt,
                    rerank_top_k: Optional[int] = RerankTopKOpt, rerank_alpha: Optional[float] = RerankAlphaOpt,
                    output: Optional[Path] = OutputOpt) -> None:
        """One-shot search of QUERY over the texts of --corpus: exact dense by default; lexical,
        hybrid and --rerank go through a temporary index (long texts chunked)."""
        from .exact import semantic_search
        from .fusion import check_mode
        from .index import Hit

        try:
            check_mode(mode, alpha)
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        reranker = _load_reranker(rerank, rerank_top_k, rerank_alpha)
        texts, _, metas = read_texts(corpus, text_field)
        enc = _load(model)
        if mode != "dense" or reranker is not None:
            search = dict(top_k=top_k, mode=mode, alpha=alpha, rerank=reranker, rerank_top_k=rerank_top_k,
                          rerank_alpha=rerank_alpha)
            _print_hits(_search_temporary(enc, texts, metas, query, search), output)
            return
        docs = enc.encode_document(texts, show_progress=len(texts) > 100)
        res = semantic_search(enc.encode_query([query]), docs, top_k, score=enc)
        _print_hits([Hit(str(i), float(s), texts[i], metas[i] if metas else None, texts[i], (0, len(texts[i])))
                     for s, i in zip(res.scores[0], res.indices[0])], output)

    @app.command("mine")
    def mine(file: Path, top_k: int = typer.Option(10, "--top-k", "-k"), threshold: Optional[float] = None,
             max_pairs: int = 1000, model: str = ModelOpt, text_field: str = "text",
             output: Optional[Path] = OutputOpt) -> None:
        """Paraphrase mining: the most similar pairs of texts in FILE."""
        from .mining import paraphrase_mining

        texts, _, _ = read_texts(file, text_field)
        enc = _load(model)
        emb = enc.encode(texts, show_progress=len(texts) > 100)
        pairs = paraphrase_mining(emb, top_k=top_k, threshold=threshold, max_pairs=max_pairs, score=enc)
        if output:
            write_json(output, [{"score": s, "i": i, "j": j, "text_i": texts[i], "text_j": texts[j]} for s, i, j in pairs])
        typer.echo(table([[s, texts[i], texts[j]] for s, i, j in pairs[:50]], ["score", "text a", "text b"], 140))

    @app.command("cluster")
    def cluster(file: Path, threshold: float = 0.75, min_size: int = 10,
                kmeans: Optional[int] = typer.Option(None, help="Run k-means with this many clusters instead."),
                model: str = ModelOpt, text_field: str = "text", output: Optional[Path] = OutputOpt) -> None:
        """Cluster the texts of FILE: community detection (default) or --kmeans K."""
        from . import cluster as cl

        texts, _, _ = read_texts(file, text_field)
        enc = _load(model)
        emb = enc.encode(texts, show_progress=len(texts) > 100)
        if kmeans:
            labels = cl.kmeans(emb, kmeans, score=enc).labels
            groups = [list(map(int, (labels == c).nonzero()[0])) for c in range(kmeans)]
            groups = sorted((g for g in groups if g), key=len, reverse=True)
        else:
            groups = cl.community_detection(emb, threshold, min_size, score=enc)
        if output:
            write_json(output, [[{"index": i, "text": texts[i]} for i in g] for g in groups])
        typer.echo(table([[n, len(g), texts[g[0]]] for n, g in enumerate(groups)], ["cluster", "size", "first text"]))

    @app.command("tag")
    def tag_cmd(passages: Path, concepts: Path, top_k: int = typer.Option(5, "--top-k", "-k"),
                threshold: Optional[float] = None, model: str = ModelOpt, text_field: str = "text",
                concept_field: str = typer.Option("term", help="Field of concept objects in a .jsonl file."),
                output: Optional[Path] = OutputOpt) -> None:
        """Tag each passage of PASSAGES with its best concepts from CONCEPTS."""
        from .tagging import tag

        ptexts, _, _ = read_texts(passages, text_field)
        ctexts, _, _ = read_texts(concepts, concept_field)
        enc = _load(model)
        tags = tag(ptexts, ctexts, top_k, encoder=enc, threshold=threshold)
        if output:
            write_json(output, [{"passage": p, "tags": [{"concept": t.concept, "score": t.score} for t in ts]}
                                for p, ts in zip(ptexts, tags)])
        typer.echo(table([[p, ", ".join(f"{t.concept} ({t.score:.2f})" for t in ts)] for p, ts in zip(ptexts, tags)],
                         ["passage", "concepts"], 140))


def _search_temporary(enc: Any, texts: list[str], metas: list | None, query: str, search: dict[str, Any]) -> list:
    """`search` (Index.search's keywords) over `texts` in an index made for it alone."""
    import tempfile

    from .index import Index

    with tempfile.TemporaryDirectory(prefix="sentembed-search-") as tmp:
        idx = Index.create(f"{tmp}/index", enc)
        idx.add(texts, ids=[str(i) for i in range(len(texts))], metadata=metas)  # ids as the dense path's
        try:
            hits = idx.search(query, **search)
        except (ValueError, TypeError) as err:
            fail(str(err))
        finally:
            idx.close()
    return hits


def _print_hits(hits: list, output: Optional[Path]) -> None:
    if output:
        write_json(output, [{"id": h.id, "score": h.score, "text": h.text, "metadata": h.metadata,
                             "passage": h.passage, "span": list(h.span) if h.span else None} for h in hits])
    typer.echo(table([[n + 1, h.score, h.id, h.passage if h.passage is not None else h.text] for n, h in enumerate(hits)],
                     ["rank", "score", "id", "passage"], 120))
