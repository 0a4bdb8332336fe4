"""sentembed demo: semantic search over the Python standard library's own documentation.

    make demo            # or: python examples/demo.py [--index ./demo-index] [--limit 1500]

1. loads the real all-mpnet-base-v2 (`sentembed.load`),
2. gathers the first paragraph of the docstrings of common standard-library modules and their
   public functions and classes (a corpus that exists wherever Python does),
3. embeds them into a persistent index in ./demo-index (reused, and resumed if interrupted),
4. reopens the index and answers a few questions with hybrid search (the vectors and BM25
   over the same passages, fused by reciprocal rank), printing each hit's matching passage.
A first run embeds about 1,500 short texts: a few minutes on 2 CPU cores.
"""
from __future__ import annotations

import argparse
import importlib
import inspect
import time
import warnings
from pathlib import Path

MODULES = [
    "abc", "argparse", "array", "asyncio", "base64", "bisect", "calendar", "collections", "concurrent.futures",
    "configparser", "contextlib", "copy", "csv", "dataclasses", "datetime", "decimal", "difflib", "email",
    "enum", "fileinput", "fnmatch", "fractions", "functools", "getpass", "glob", "gzip", "hashlib", "heapq",
    "hmac", "html", "http.client", "http.server", "imaplib", "inspect", "io", "ipaddress", "itertools", "json",
    "logging", "lzma", "math", "mimetypes", "multiprocessing", "operator", "os", "os.path", "pathlib", "pickle",
    "platform", "pprint", "queue", "random", "re", "sched", "secrets", "select", "shelve", "shlex", "shutil",
    "signal", "smtplib", "socket", "sqlite3", "ssl", "statistics", "string", "struct", "subprocess", "tarfile",
    "tempfile", "textwrap", "threading", "time", "timeit", "tokenize", "traceback", "typing", "unicodedata",
    "unittest", "urllib.parse", "urllib.request", "uuid", "warnings", "weakref", "xml.etree.ElementTree",
    "zipfile", "zlib",
]

QUESTIONS = [
    "How do I turn a JSON string into Python objects?",
    "compress a file so it takes less disk space",
    "run another program and capture what it prints",
    "pick a cryptographically secure random token",
]


def first_paragraph(doc: str | None, limit: int = 300) -> str | None:
    if not doc:
        return None
    para = " ".join(inspect.cleandoc(doc).split("\n\n")[0].split())
    if len(para) < 20:
        return None
    return para if len(para) <= limit else para[: limit - 1].rsplit(" ", 1)[0] + "…"


def gather(limit: int) -> list[tuple[str, str, dict]]:
    """(id, text, metadata) for modules and their public functions and classes, in a fixed order."""
    out: list[tuple[str, str, dict]] = []
    seen: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                mod = importlib.import_module(name)
            except Exception:  # a module this Python lacks: the demo goes on without it
                continue
            items = [(name, mod, "module")]
            for attr in sorted(dir(mod)):
                obj = getattr(mod, attr, None)
                if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or inspect.isbuiltin(obj)):
                    continue
                if getattr(obj, "__module__", name) not in (name, mod.__name__, "_" + name.split(".")[-1]):
                    continue  # re-exported from elsewhere
                items.append((f"{name}.{attr}", obj, "class" if inspect.isclass(obj) else "function"))
            for qual, obj, kind in items:
                text = first_paragraph(getattr(obj, "__doc__", None))
                if text and qual not in seen:
                    seen.add(qual)
                    out.append((qual, f"{qual}: {text}", {"module": name, "kind": kind}))
    # Evenly thin out to the limit, keeping every module's own docstring.
    if len(out) > limit:
        mods = [x for x in out if x[2]["kind"] == "module"]
        rest = [x for x in out if x[2]["kind"] != "module"]
        keep = limit - len(mods)
        step = len(rest) / keep
        rest = [rest[int(i * step)] for i in range(keep)]
        order = {x[0]: i for i, x in enumerate(out)}
        out = sorted(mods + rest, key=lambda x: order[x[0]])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index", default="demo-index")
    p.add_argument("--model", default="all-mpnet-base-v2")
    p.add_argument("--limit", type=int, default=1500, help="at most this many texts")
    p.add_argument("--top-k", type=int, default=3)
    args = p.parse_args()

    import torch

    import sentembed
    from sentembed.search import Index

    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    enc = sentembed.load(args.model)
    print(f"model: {enc.name} ({enc.dimension} dims, {enc.similarity_fn_name}) loaded in {time.perf_counter() - t0:.0f} s")

    docs = gather(args.limit)
    path = Path(args.index)
    index = Index.open(path, enc) if (path / "manifest.json").exists() else Index.create(path, enc)
    done = set(index.existing([d[0] for d in docs]))
    todo = [d for d in docs if d[0] not in done]
    if todo:
        print(f"embedding {len(todo)} of {len(docs)} docstrings into {path}/ (each batch commits; safe to interrupt)")
        t = time.perf_counter()
        for s in range(0, len(todo), 250):
            part = todo[s : s + 250]
            index.add([x[1] for x in part], ids=[x[0] for x in part], metadata=[x[2] for x in part])
            print(f"  {s + len(part)}/{len(todo)}  ({time.perf_counter() - t:.0f} s)", flush=True)
    else:
        print(f"reusing {path}/ with {len(index)} docstrings")
    index.close()

    index = Index.open(path, enc)  # reopen: what a later process would see
    if not index.lexical:  # a demo index from before lexical search
        index.upgrade()
    info = index.info()
    print(f"index: {info['count']} documents, {info['kind']} search, {info['bytes'] / 1e6:.1f} MB on disk\n")
    for question in QUESTIONS:
        print(f"Q: {question}")
        for hit in index.search(question, top_k=args.top_k, mode="hybrid"):
            print(f"   {hit.score:.4f}  {hit.passage[:110]}")
        print()
    q = "read a compressed archive"
    print(f"Q: {q}   (only classes)")
    for hit in index.search(q, top_k=args.top_k, where={"kind": "class"}, mode="hybrid"):
        print(f"   {hit.score:.4f}  {hit.passage[:110]}")
    print(f"\ndone in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
