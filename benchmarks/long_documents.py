"""Documents longer than the window: chunked indexing against whole-text indexing (issue 22).

    python benchmarks/long_documents.py                       # 120 modules (~10 min on 2 quiet cores, bf16)
    python benchmarks/long_documents.py --limit-modules 5     # a quick check of the script
    python benchmarks/long_documents.py --limit-modules 0     # every module

The test set, from the OpenStax paragraphs in ../shared/data/openstax:

- documents: each module's paragraphs joined in order by blank lines, one document a module
  (the section title left out: the text alone has to carry the answer);
- queries: for a paragraph with tagged key terms, the glossary definition of its first tagged
  term that is unambiguous; the one relevant document is the paragraph's module. A definition
  names the concept in the authors' own words without quoting the paragraph, and the paragraph
  that tags the term is where the book explains it, so the evidence sits in one known place of
  one document, anywhere in it. Dropped as ambiguous: terms tagged in more than one paragraph
  (in several modules, or several times in one, where the evidence has no one position), terms
  with no glossary entry in that module or with several, definitions shared by several terms,
  and definitions found word for word in some paragraph (a quotation, not a question);
- where the evidence sits: the tagged term's first mention in its paragraph falls inside the
  document's first window (the text whole-text indexing reads: max_seq_length tokens with the
  special tokens) or later.

Two indexes over the same documents, one model: chunked (chunk_tokens="auto", the window and
overlap the index chooses) and whole-text (chunk_tokens=None: each document embedded from its
first window; its lexical table still holds the whole text). Each answers every query in each
mode at top-10: hit@1, hit@5, hit@10 and MRR@10, overall and split by where the evidence sits.
The queries are embedded once and handed to both indexes, so the two differ only in indexing.

With --limit-modules N: N modules spread evenly over both books (the queries of those modules;
the others are not in the index). Fewer modules make a smaller haystack: compare figures of
runs with the same N only.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

INDEXES = {"chunked": "auto", "whole-text": None}
KS = (1, 5, 10)
# 120 of the 185 modules: 381 queries, about 554k tokens to embed (chunked 510k, whole-text
# 44k), 9 minutes at 1,000 tokens/s. bf16 embeds documents at about 1,500 tokens/s on 2 quiet
# cores (README, encode.py); the --limit-modules 5 run, sharing its cores, burnt 2.6 ms of CPU
# a token, 760 tokens/s on 2 cores (a floor: contention inflates CPU time): 12 minutes at that
# pace. All 185 modules would take 13.5 minutes at 1,000 tokens/s, too close to 15.
DEFAULT_MODULES = 120


@dataclass(frozen=True)
class Query:
    text: str        # the glossary definition
    module: str      # the relevant document
    term: str
    para_id: str
    offset: int      # character offset of the term's first mention in the document


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def build_test_set(folder: Path) -> tuple[dict[str, str], list[Query], Counter]:
    """Documents (module -> text), queries over all modules, and why queries were dropped."""
    paragraphs = read_jsonl(folder / "paragraphs.jsonl")
    glossary = read_jsonl(folder / "glossary.jsonl")
    by_module: dict[str, list[dict]] = defaultdict(list)
    for p in paragraphs:
        by_module[p["module"]].append(p)
    docs: dict[str, str] = {}
    starts: dict[str, int] = {}  # para_id -> its character offset in its document
    for module, paras in by_module.items():
        pos, parts = 0, []
        for p in paras:
            starts[p["para_id"]] = pos
            parts.append(p["text"])
            pos += len(p["text"]) + 2
        docs[module] = "\n\n".join(parts)

    tagged: dict[str, list[dict]] = defaultdict(list)
    for p in paragraphs:
        for term in dict.fromkeys(t.lower() for t in p["terms"]):
            tagged[term].append(p)
    entries: dict[str, list[dict]] = defaultdict(list)
    for g in glossary:
        entries[g["term"].lower()].append(g)
    shared = Counter(g["definition"].strip().lower() for g in glossary)
    all_text = "\n".join(p["text"].lower() for p in paragraphs)

    def why_not(term: str, p: dict) -> str | None:
        if len(tagged[term]) > 1:
            return "term tagged in several paragraphs"
        defs = entries.get(term, [])
        if len(defs) != 1 or defs[0]["module"] != p["module"]:
            return "no single glossary entry in the module"
        definition = defs[0]["definition"].strip().lower()
        if shared[definition] > 1:
            return "definition shared by several terms"
        if definition in all_text:
            return "definition quoted in a paragraph"
        return None

    queries, dropped = [], Counter()
    for p in paragraphs:
        if not p["terms"]:
            continue
        reasons = []
        for term in dict.fromkeys(t.lower() for t in p["terms"]):
            reason = why_not(term, p)
            if reason is None:
                mention = max(p["text"].lower().find(term), 0)
                queries.append(Query(entries[term][0]["definition"].strip(), p["module"], term, p["para_id"],
                                     starts[p["para_id"]] + mention))
                break
            reasons.append(reason)
        else:
            dropped[reasons[0]] += 1
    return docs, queries, dropped


def pick_modules(modules: list[str], limit: int) -> list[str]:
    """`limit` modules spread evenly over the list (both books), or all of them for 0."""
    if not limit or limit >= len(modules):
        return modules
    return [modules[i] for i in np.linspace(0, len(modules) - 1, limit).round().astype(int)]


def first_window_ends(enc, docs: dict[str, str]) -> dict[str, int]:
    """Per document, the character offset where the text whole-text indexing reads ends."""
    room = enc.max_seq_length - enc.tokenizer.fast.num_special_tokens_to_add(False)
    out = {}
    for module, e in zip(docs, enc.tokenizer.encodings(list(docs.values()), add_special_tokens=False)):
        out[module] = e.offsets[room - 1][1] if len(e.offsets) > room else len(docs[module])
    return out


def lengths(enc, docs: dict[str, str]) -> dict:
    n = enc.count_tokens(list(docs.values()))
    q = np.percentile(n, [10, 25, 50, 75, 90])
    return {"documents": len(n), "over_window": int(sum(x > enc.max_seq_length for x in n)),
            "share_over_window": float(np.mean([x > enc.max_seq_length for x in n])),
            "tokens": {"min": int(min(n)), "p10": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
                       "p75": float(q[3]), "p90": float(q[4]), "max": int(max(n)), "total": int(sum(n))}}


def build(path: Path, enc, docs: dict[str, str], chunk_tokens, batch: int = 8):
    """An index of `docs`, added `batch` documents at a time with progress; and its pace."""
    from sentembed.search import Index

    idx = Index.create(path, enc, chunk_tokens=chunk_tokens)
    ids = list(docs)
    passages = [docs[m][a:b] for m, spans in zip(ids, idx.chunk([docs[m] for m in ids])) for a, b in spans]
    tokens = sum(min(n, enc.max_seq_length) for n in enc.count_tokens(passages))
    start = time.perf_counter()
    for s in range(0, len(ids), batch):
        part = ids[s : s + batch]
        idx.add([docs[m] for m in part], ids=part)
        secs = time.perf_counter() - start
        print(f"\r  {min(s + batch, len(ids))}/{len(ids)} documents, {secs:.0f} s", end="", flush=True)
    secs = time.perf_counter() - start
    print(f"\r  {len(ids)} documents, {len(passages)} passages, {tokens} tokens embedded in {secs:.0f} s "
          f"({tokens / secs:.0f} tokens/s)", flush=True)
    return idx, {"seconds": secs, "passages": len(passages), "tokens_embedded": tokens, "tokens_per_s": tokens / secs}


def scores(ranks: list[int | None]) -> dict:
    """hit@k and MRR@10 from the 1-based rank of the relevant document (None: not in the top 10)."""
    out = {f"hit@{k}": float(np.mean([r is not None and r <= k for r in ranks])) if ranks else float("nan") for k in KS}
    out["mrr@10"] = float(np.mean([1 / r if r else 0.0 for r in ranks])) if ranks else float("nan")
    out["queries"] = len(ranks)
    return out


def evaluate(idx, queries: list[Query], vectors: np.ndarray, where: list[str], mode: str) -> dict:
    hits = idx.search_many([q.text for q in queries], top_k=10, mode=mode, query_vectors=vectors)
    ranks = [next((i + 1 for i, h in enumerate(found) if h.id == q.module), None) for q, found in zip(queries, hits)]
    out = {"all": scores(ranks)}
    for part in ("first window", "later"):
        out[part] = scores([r for r, w in zip(ranks, where) if w == part])
    return out


def render(results: dict, modes: list[str]) -> str:
    lines = ["| index | mode | evidence | queries | hit@1 | hit@5 | hit@10 | MRR@10 |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for part in ("all", "first window", "later"):
        for mode in modes:
            for name in INDEXES:
                r = results[name][mode][part]
                lines.append(f"| {name} | {mode} | {part} | {r['queries']} | {r['hit@1']:.3f} | {r['hit@5']:.3f} | "
                             f"{r['hit@10']:.3f} | {r['mrr@10']:.3f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "openstax")
    p.add_argument("--model", default="all-mpnet-base-v2")
    p.add_argument("--dtype", default="bfloat16", help="float32, bfloat16 or auto")
    p.add_argument("--modes", default="dense,hybrid", help="comma separated: dense, lexical, hybrid")
    p.add_argument("--limit-modules", type=int, default=DEFAULT_MODULES,
                   help=f"modules in the index, spread over both books (default {DEFAULT_MODULES}; 0: all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("-o", "--output", type=Path, default=None, help="write the figures as JSON")
    args = p.parse_args()
    if not (args.data / "paragraphs.jsonl").is_file():
        sys.exit(f"no OpenStax data at {args.data} (paragraphs.jsonl, glossary.jsonl): give --data")

    import torch

    import sentembed
    from sentembed.encoder import encode_as
    from sentembed.model.cpu import cpu

    torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    command = "python " + " ".join(shlex.quote(a) for a in [str(Path(sys.argv[0]))] + sys.argv[1:])
    print(f"CPU: {cpu().describe()}; {args.threads} threads\ncommand: {command}", flush=True)

    all_docs, all_queries, dropped = build_test_set(args.data)
    modules = pick_modules(list(all_docs), args.limit_modules)
    docs = {m: all_docs[m] for m in modules}
    queries = [q for q in all_queries if q.module in docs]
    enc = sentembed.load(args.model, dtype=args.dtype)
    ends = first_window_ends(enc, docs)
    where = ["first window" if q.offset < ends[q.module] else "later" for q in queries]
    stats = lengths(enc, docs)
    t = stats["tokens"]
    print(f"OpenStax: {len(docs)} of {len(all_docs)} modules as documents; {stats['over_window']} "
          f"({100 * stats['share_over_window']:.0f}%) longer than the {enc.max_seq_length}-token window; tokens "
          f"min {t['min']}, p10 {t['p10']:.0f}, median {t['median']:.0f}, p90 {t['p90']:.0f}, max {t['max']}",
          flush=True)
    print(f"queries: {len(queries)} (of {len(all_queries)} over all modules; paragraphs with terms but none usable, "
          "by the first term's reason: " + ", ".join(f"{n} {why}" for why, n in dropped.most_common()) + ")", flush=True)
    print(f"evidence in the first window: {where.count('first window')}, later: {where.count('later')}", flush=True)

    report: dict = {"model": args.model, "dtype": enc.dtype, "cpu": cpu().describe(), "threads": args.threads,
                    "command": command, "modules": len(docs), "documents": stats, "queries": len(queries),
                    "dropped": dict(dropped), "evidence": dict(Counter(where)), "modes": modes,
                    "index": {}, "results": {}}
    vectors = encode_as(enc, [q.text for q in queries], "query") if queries else None
    with tempfile.TemporaryDirectory(prefix="sentembed-long-") as tmp:
        for name, chunk_tokens in INDEXES.items():
            print(f"{name} index (chunk_tokens={chunk_tokens!r})", flush=True)
            idx, report["index"][name] = build(Path(tmp) / name, enc, docs, chunk_tokens)
            report["results"][name] = {mode: evaluate(idx, queries, vectors, where, mode) for mode in modes} \
                if queries else {}
            idx.close()
    if queries:
        print("\n" + render(report["results"], modes) + "\n")
    if args.output:
        args.output.write_text(json.dumps(report, indent=2))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
