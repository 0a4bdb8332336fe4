"""On a CUDA GPU: packed sequences against length-bucketed padded batches against sentence-transformers.

Encodes the STS-B dev sentences and the first SciFact documents ((title + " " + text).strip())
with all-mpnet-base-v2 in fp16 and bf16, three ways, alternately (round-robin, the first
variant rotating each round; the best round counts):

- se-packed:   sentembed, sequences packed into rows of --token-budget tokens without padding,
               block-diagonal FlexAttention with the relative bias (sentembed/model/packing.py)
- se-bucketed: sentembed's padded batches of similar length (encode()'s default; SENTEMBED_PACKING=0)
- st:          sentence-transformers cast to the same dtype, its own length-sorted batches

Prints sentences/s and tokens/s, the ratios packed / bucketed and each / st, and the mean cosine
to sentence-transformers fp32 (computed once, untimed). Warm-up runs both sets once per variant,
so FlexAttention's compilation is not timed.

    .venv-bench/bin/python benchmarks/gpu_packing.py
    .venv-bench/bin/python benchmarks/gpu_packing.py --sentences 1000 --documents 200 --rounds 2 --dtypes float16

Needs CUDA, the real all-mpnet-base-v2 (installed PyPI parts, or --model DIR) and ../shared/data
(or --data). `--device cpu --dtypes bfloat16` with small sets dry-runs the script without a GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import numpy as np

from encode import ROOT, row_cosines, scifact_documents, stsb_sentences  # shared with the CPU benchmark

Encode = Callable[[list[str]], np.ndarray]


def packing_off():
    """encode() with padded, length-sorted batches even where it would pack."""
    return mock.patch.dict(os.environ, {"SENTEMBED_PACKING": "0"})


def variants(model_dir: Path, dtype: str, batch: int, budget: int, device: str) -> dict[str, Encode]:
    import torch

    import sentembed
    from sentembed.model.packing import packed_sentence_embeddings

    enc = sentembed.load(str(model_dir), device=device, dtype=dtype)

    def packed(texts: list[str]) -> np.ndarray:
        with torch.inference_mode():
            out = packed_sentence_embeddings(enc.pipeline, enc.tokenizer.ids(texts), token_budget=budget)
        return out.float().cpu().numpy()

    def bucketed(texts: list[str]) -> np.ndarray:
        with packing_off():
            return enc.encode(texts, batch_size=batch, show_progress=False)

    out = {f"se-packed-{dtype}": packed, f"se-bucketed-{dtype}": bucketed}
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed: the st variants are left out", file=sys.stderr)
        return out
    st = SentenceTransformer(str(model_dir), device=device).to(getattr(torch, dtype))
    out[f"st-{dtype}"] = lambda texts: st.encode(texts, batch_size=batch, normalize_embeddings=True,
                                                 convert_to_numpy=True, show_progress_bar=False)
    return out


def reference_fp32(model_dir: Path, sets: dict[str, list[str]], batch: int, device: str) -> dict[str, np.ndarray]:
    """sentence-transformers fp32 vectors (sentembed's fp32 where it is absent), for fidelity only."""
    try:
        from sentence_transformers import SentenceTransformer

        # .float(): transformers loads a float16 checkpoint as float16 unless told otherwise
        model = SentenceTransformer(str(model_dir), device=device).float()
        return {k: model.encode(t, batch_size=batch, normalize_embeddings=True, show_progress_bar=False) for k, t in sets.items()}
    except ImportError:
        import sentembed

        enc = sentembed.load(str(model_dir), device=device)
        with packing_off():
            return {k: enc.encode(t, batch_size=batch, show_progress=False) for k, t in sets.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory (default: all-mpnet-base-v2 from the PyPI parts)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("SENTEMBED_DATA", ROOT.parent / "shared" / "data")))
    parser.add_argument("--sentences", type=int, default=3000, help="STS-B dev sentences (limit)")
    parser.add_argument("--documents", type=int, default=1000, help="SciFact documents (limit)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128, help="texts a padded batch (bucketed, st)")
    parser.add_argument("--token-budget", type=int, default=16384, help="tokens a packed row")
    parser.add_argument("--dtypes", default="float16,bfloat16")
    parser.add_argument("--device", default="cuda", help="cpu only to dry-run this script (bfloat16, small sets)")
    parser.add_argument("--profile", action="store_true",
                        help="after the timing, profile one documents run of each sentembed variant: top operators")
    args = parser.parse_args(argv)

    import torch

    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        print("gpu_packing.py measures GPU encoding and needs CUDA; torch.cuda.is_available() is False here. "
              "Run it on a machine with an NVIDIA GPU and a CUDA build of torch.", file=sys.stderr)
        return 2
    if not args.data.is_dir():
        print(f"data not found at {args.data} (pass --data)", file=sys.stderr)
        return 2
    from sentembed.model.resolve import resolve_model

    model_dir = args.model or resolve_model("all-mpnet-base-v2")
    sets = {"sentences": stsb_sentences(args.data, args.sentences), "documents": scifact_documents(args.data, args.documents)}
    import sentembed

    counter = sentembed.load(str(model_dir), device="cpu")
    tokens = {k: sum(min(n, counter.max_seq_length) for n in counter.count_tokens(t)) for k, t in sets.items()}
    reference = reference_fp32(model_dir, sets, args.batch_size, args.device)
    runs: dict[str, Encode] = {}
    for dtype in args.dtypes.split(","):
        runs.update(variants(model_dir, dtype, args.batch_size, args.token_budget, args.device))
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if cuda else args.device}, batch {args.batch_size}, "
          f"packed rows of {args.token_budget} tokens; " + ", ".join(f"{k}: {len(t)} texts, {tokens[k]} tokens" for k, t in sets.items()))

    for name, run in runs.items():  # warm-up: compilation, allocator, cuBLAS heuristics
        start = time.perf_counter()
        for texts in sets.values():
            run(texts)
        print(f"  warmed {name} in {time.perf_counter() - start:.0f}s", flush=True)

    best: dict[tuple[str, str], float] = {}
    cosine: dict[tuple[str, str], float] = {}
    names = list(runs)
    for r in range(args.rounds):
        for name in names[r % len(names):] + names[: r % len(names)]:
            for set_name, texts in sets.items():
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                vectors = runs[name](texts)
                elapsed = time.perf_counter() - start  # the copy to host inside run() waits for the GPU
                best[name, set_name] = min(best.get((name, set_name), float("inf")), elapsed)
                # float64: fp16 vectors would round the cosine past 1
                cosine[name, set_name] = float(row_cosines(vectors.astype(np.float64),
                                                           reference[set_name].astype(np.float64)).mean())
        print(f"round {r + 1}/{args.rounds} done", flush=True)

    print("\n| set | variant | sentences/s | tokens/s | x bucketed | x st | mean cos to st fp32 |\n|---|---|---:|---:|---:|---:|---:|")
    for set_name, texts in sets.items():
        for name in names:
            dtype = name.rsplit("-", 1)[1]
            seconds = best[name, set_name]
            ratio = {v: best[f"{v}-{dtype}", set_name] / seconds if (f"{v}-{dtype}", set_name) in best else float("nan")
                     for v in ("se-bucketed", "st")}
            print(f"| {set_name} | {name} | {len(texts) / seconds:.0f} | {tokens[set_name] / seconds:.0f} | "
                  f"{ratio['se-bucketed']:.2f}x | {ratio['st']:.2f}x | {cosine[name, set_name]:.6f} |")
    for set_name in sets:
        for dtype in args.dtypes.split(","):
            packed, bucketed = best[f"se-packed-{dtype}", set_name], best[f"se-bucketed-{dtype}", set_name]
            winner = "packed" if packed < bucketed else "length-bucketed"
            print(f"{set_name} {dtype}: {winner} wins, packed {bucketed / packed:.2f}x bucketed")
    if args.profile:
        profile_operators({k: v for k, v in runs.items() if k.startswith("se-")}, sets["documents"], cuda)
    return 0


def profile_operators(runs: dict[str, Encode], texts: list[str], cuda: bool, rows: int = 15) -> None:
    """The operators that take the time, per variant: packed rows cost far more than their GEMMs
    on an H100 (README), and this is the table that should say why."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for name, run in runs.items():
        with profile(activities=activities) as prof:
            run(texts)
        key = "cuda_time_total" if cuda else "cpu_time_total"
        print(f"\n{name}, {len(texts)} documents:")
        print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70))


if __name__ == "__main__":
    sys.exit(main())
