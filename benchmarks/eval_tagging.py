"""Concept tagging baseline on OpenStax: is an author-tagged term among a paragraph's top-k
glossary terms of its book?

    python benchmarks/eval_tagging.py --limit 300             # every n-th tagged paragraph, 300 in all
    python benchmarks/eval_tagging.py --limit 0               # all 1,005 tagged paragraphs

Each paragraph with inline key terms is tagged with `sentembed.search.tag` against its book's
glossary terms (Psychology 2e: 677, Chemistry 2e: 594). A tagged term counts when it is a
glossary term of that book (case-insensitive); it is a hit when it is in the paragraph's top k.
Reports term-level hit@1 and hit@k, and paragraph-level hit@k (any of its glossary terms in the
top k; over the paragraphs that have at least one).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "openstax"))
    p.add_argument("--model", default="all-mpnet-base-v2")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--limit", type=int, default=300, help="paragraphs (evenly spaced); 0 = all")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--output", default=None)
    args = p.parse_args()

    import torch

    import sentembed
    from sentembed.search import tag

    torch.set_num_threads(args.threads)
    data = Path(args.data)
    paras = [json.loads(x) for x in (data / "paragraphs.jsonl").read_text().splitlines() if x.strip()]
    gloss = [json.loads(x) for x in (data / "glossary.jsonl").read_text().splitlines() if x.strip()]
    terms: dict[str, list[str]] = {}
    for g in gloss:
        book = terms.setdefault(g["book"], [])
        if g["term"].lower() not in {t.lower() for t in book}:
            book.append(g["term"])
    tagged = [x for x in paras if x["terms"]]
    if args.limit and args.limit < len(tagged):
        step = len(tagged) / args.limit
        tagged = [tagged[int(i * step)] for i in range(args.limit)]
    enc = sentembed.load(args.model)
    start = time.perf_counter()
    n_terms = hits1 = hitsk = para_hit = skipped = para_known = 0
    for book, concepts in terms.items():
        ps = [x for x in tagged if x["book"] == book]
        if not ps:
            continue
        results = tag([x["text"] for x in ps], concepts, args.top_k, encoder=enc)
        known = {t.lower() for t in concepts}
        for x, tags in zip(ps, results):
            ranked = [t.concept.lower() for t in tags]
            any_hit = False
            para_known += any(t.lower() in known for t in x["terms"])
            for term in {t.lower() for t in x["terms"]}:
                if term not in known:
                    skipped += 1
                    continue
                n_terms += 1
                hits1 += ranked[:1] == [term]
                if term in ranked:
                    hitsk += 1
                    any_hit = True
            para_hit += any_hit
    secs = time.perf_counter() - start
    res = {
        "model": args.model, "paragraphs": len(tagged), "tagged_terms_in_glossary": n_terms,
        "tagged_terms_not_in_glossary": skipped, "top_k": args.top_k,
        "term_hit@1": round(hits1 / n_terms, 4), f"term_hit@{args.top_k}": round(hitsk / n_terms, 4),
        f"paragraph_hit@{args.top_k}": round(para_hit / para_known, 4), "paragraphs_with_glossary_terms": para_known, "seconds": round(secs, 1),
    }
    print(json.dumps(res, indent=2))
    if args.output:
        Path(args.output).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
