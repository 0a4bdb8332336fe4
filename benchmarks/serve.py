"""The HTTP service under load, with and without dynamic batching, against offline encode.

    .venv/bin/python benchmarks/serve.py                      # all-mpnet-base-v2, 32 clients
    .venv/bin/python benchmarks/serve.py --rounds 1           # a quicker look
    .venv/bin/python benchmarks/serve.py --quantize int8      # the int8 path, servers and offline alike

Two servers (batching on, batching off), each in a process of its own on 127.0.0.1, and
offline `encode` of the very same texts (one call in this process, with the servers'
--encode-batch-size, and with encode's default 32 for reference where that differs), all loaded with
the same --dtype and --quantize (`sentembed serve`'s options, `load`'s arguments), in
--rounds rounds that alternate the three and rotate their order; each one's best round:
- throughput: 32 concurrent clients x --requests requests of 1-16 STS-B dev sentences on
  /v1/embeddings; sentences/s and its share of offline encode (goal >= 85%); also sentences
  per CPU-second (server + client process), which a busy shared machine disturbs less;
- latency: 32 concurrent clients x --single requests of one sentence each; p50 and p99;
- where the time goes: the share of the batching server's best round its model ran (its
  /metrics), how its forward passes compare with offline encode of the same texts, and its
  threads' time on a core, waiting for one and asleep (Linux's schedstat): the model's OpenMP
  team beside offline encode's, the event loop's a request, the rest;
- fidelity: the lowest cosine between a vector the batching server sent and offline encode's
  (batches of other shapes; 1.0 up to rounding on the fp32 path).
Responses are asked for as base64 (what OpenAI's own client asks for): floats as JSON text
would cost the client more than the model. The clients run in this process and share the
cores with the server: by default a lean HTTP/1.1 client (--client lean, about 0.2 ms of CPU a
request), since httpx (--client httpx, about 3.7 ms a request) took a sixth of a core that the
server's two model threads then waited for at every barrier. Prints a markdown table and
writes benchmarks/results/serve.json (serve-int8.json, serve-bfloat16.json, ... for other paths),
and beside it serve.png (latency percentiles, plots.py).
The machine is shared: keep the counts small.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import re
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))   # measure this checkout, whatever the venv has installed
import plots  # noqa: E402  (benchmarks/plots.py, beside this script)
from sentembed.backends.options import DTYPE_CHOICES, QUANTIZE_CHOICES  # noqa: E402  (no torch)
DATA = Path(os.environ.get("SENTEMBED_DATA", ROOT.parent / "shared" / "data"))
LAUNCH = ("import typer; from sentembed.server.cli import register; app = typer.Typer(); "
          "app.callback()(lambda: None); register(app); app()")


def stsb_sentences() -> list[str]:
    out: dict[str, None] = {}
    for line in (DATA / "stsb" / "sts-dev.csv").read_text(encoding="utf-8").splitlines():
        parts = line.split("\t")
        out[parts[5]] = None
        out[parts[6]] = None
    return list(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, batching: bool, encode_batch_size: int | None, path: list[str],
                 extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    args = [sys.executable, "-c", LAUNCH, "serve", model, "--port", str(port), "--log-level", "warning",
            "--max-client-batch-size", "64", *path, *extra]
    if encode_batch_size is not None:
        args += ["--encode-batch-size", str(encode_batch_size)]
    if not batching:
        args.append("--no-batching")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.3)


async def httpx_client(url: str, batches: list[list[str]], latencies: list[float], fmt: str,
                       answers: list[tuple[list[str], bytes]]) -> None:
    """httpx, as many Python callers send: about 3.7 ms of CPU a request here."""
    import httpx

    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        for texts in batches:
            t = time.perf_counter()
            r = await http.post("/v1/embeddings", json={"input": texts, "encoding_format": fmt})
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)
            answers.append((texts, r.content))  # read after the run: parsing would load the 2 cores


async def lean_client(url: str, batches: list[list[str]], latencies: list[float], fmt: str,
                      answers: list[tuple[list[str], bytes]]) -> None:
    """HTTP/1.1 on one kept-alive connection, bodies encoded before the first request: a load
    generator that leaves the server the 2 cores it shares with it (wrk and TEI's benchmark
    are built for the same reason)."""
    host, port = url.removeprefix("http://").split(":")
    bodies = [json.dumps({"input": texts, "encoding_format": fmt}).encode() for texts in batches]
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        for texts, body in zip(batches, bodies):
            t = time.perf_counter()
            writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (host.encode(), len(body), body))
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length: *(\d+)", head)
            if length is None:
                raise RuntimeError(f"no Content-Length in the answer: {head[:200]!r}")
            content = await reader.readexactly(int(length.group(1)))
            if not head.startswith(b"HTTP/1.1 200"):
                raise RuntimeError(f"{head.splitlines()[0].decode()}: {content[:200].decode(errors='replace')}")
            latencies.append(time.perf_counter() - t)
            answers.append((texts, content))
    finally:
        writer.close()


CLIENTS = {"lean": lean_client, "httpx": httpx_client}


def load(url: str, plans: list[list[list[str]]], fmt: str,
         vectors: dict[str, np.ndarray] | None = None, kind: str = "lean") -> tuple[float, list[float]]:
    """Run every client's plan at once; wall seconds and per-request latencies. Given `vectors`,
    the vectors the server sent go there, by text, once the clock has stopped."""
    latencies: list[float] = []
    answers: list[tuple[list[str], bytes]] = []

    async def run_all() -> None:
        await asyncio.gather(*(CLIENTS[kind](url, p, latencies, fmt, answers) for p in plans))

    t = time.perf_counter()
    asyncio.run(run_all())
    wall = time.perf_counter() - t
    for texts, body in answers if vectors is not None else ():
        for text, item in zip(texts, json.loads(body)["data"]):
            vectors[text] = decode(item["embedding"])
    return wall, latencies


def decode(embedding: str | list[float]) -> np.ndarray:
    if isinstance(embedding, str):
        return np.frombuffer(base64.b64decode(embedding), dtype="<f4")
    return np.asarray(embedding, dtype=np.float32)


def metric(url: str, name: str) -> float:
    """One sample of the server's /metrics, e.g. "sentembed_batch_size_sum"."""
    import httpx

    text = httpx.get(f"{url}/metrics", timeout=30).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def mean_batch(url: str) -> float:
    return metric(url, "sentembed_batch_size_sum") / max(metric(url, "sentembed_batch_size_count"), 1)


def describe(runs: dict) -> str:
    """What /info says the model runs in, in a few words: "torch, bfloat16, int8"."""
    return ", ".join(str(value) for value in runs.values() if value is not None)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_seconds(pid: int) -> dict[str, tuple[float, float]]:
    """Per thread of a process: seconds on a core and seconds waiting for one (Linux's
    /proc/<pid>/task/<tid>/schedstat); {} where the kernel keeps no such file."""
    out = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            ran, waited = (task / "schedstat").read_text().split()[:2]
        except (OSError, ValueError):
            continue
        out[task.name] = (int(ran) / 1e9, int(waited) / 1e9)
    return out


def thread_use(before: dict, after: dict, team: int, loop: str | None) -> dict[str, float]:
    """Where a process's threads spent a round: the model's OpenMP team (its `team` busiest
    threads), the event loop (thread `loop`, a server's main thread) and the rest."""
    ran = {tid: (r - before.get(tid, (0.0, 0.0))[0], w - before.get(tid, (0.0, 0.0))[1])
           for tid, (r, w) in after.items()}
    loop_s = ran.pop(loop, (0.0, 0.0))[0] if loop else 0.0
    busiest = sorted(ran.values(), reverse=True)
    return {"model_threads_s": sum(r for r, _ in busiest[:team]),
            "model_threads_waiting_s": sum(w for _, w in busiest[:team]),
            "event_loop_s": loop_s, "other_threads_s": sum(r for r, _ in busiest[team:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="all-mpnet-base-v2")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--requests", type=int, default=8, help="multi-sentence requests per client per round")
    ap.add_argument("--single", type=int, default=3, help="single-sentence requests per client per round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds, alternating the contenders; best of each")
    ap.add_argument("--format", default="base64", choices=["base64", "float"])
    ap.add_argument("--client", default="lean", choices=list(CLIENTS),
                    help="the load generator: lean HTTP/1.1 on asyncio streams, or httpx (more CPU a request)")
    ap.add_argument("--encode-batch-size", type=int, default=32,
                    help="texts a forward pass, servers and offline alike (the server's default: 32)")
    ap.add_argument("--dtype", default="float32", choices=DTYPE_CHOICES, help="as `sentembed serve --dtype`")
    ap.add_argument("--quantize", default=None, choices=QUANTIZE_CHOICES, help="as `sentembed serve --quantize`")
    ap.add_argument("--server-args", default="", help="more `sentembed serve` options, e.g. '--max-batch-tokens 2048'")
    ap.add_argument("--out", type=Path, default=None,
                    help="default: benchmarks/results/serve.json, serve-int8.json, serve-bfloat16.json, ...")
    args = ap.parse_args()
    path_name = "-".join(p for p in (args.quantize, None if args.dtype == "float32" else args.dtype) if p)
    args.out = args.out or ROOT / "benchmarks" / "results" / f"serve{'-' + path_name if path_name else ''}.json"
    path = ["--dtype", args.dtype] + (["--quantize", args.quantize] if args.quantize else [])

    import sentembed
    import torch
    from sentembed.server.service import runs_in

    sentences = stsb_sentences()
    rng = random.Random(0)
    multi = [[rng.sample(sentences, rng.randint(1, 16)) for _ in range(args.requests)] for _ in range(args.clients)]
    single = [[[rng.choice(sentences)] for _ in range(args.single)] for _ in range(args.clients)]
    texts = [t for plan in multi for batch in plan for t in batch]

    enc = sentembed.load(args.model, device="cpu", dtype=args.dtype, quantize=args.quantize)
    enc.encode(sentences[:64])  # warm up (int8: compiles its graph, which the servers then read from disk)
    servers = {name: start_server(args.model, batching, args.encode_batch_size, path, shlex.split(args.server_args))
               for name, batching in (("batching", True), ("no batching", False))}
    served: dict[str, np.ndarray] = {}  # what the batching server sent, by text
    batch_size = args.encode_batch_size
    offline_bs = {"offline": batch_size} | ({"offline, batch 32": 32} if batch_size != 32 else {})  # 32: encode's default
    runs: dict[str, list[dict]] = {name: [] for name in (*offline_bs, *servers)}
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    single_rate: dict[str, list[float]] = {}
    try:
        for _, url in servers.values():
            load(url, [[sentences[:16]]], args.format)  # warm up
        names = list(runs)
        for r in range(args.rounds):
            # The machine is shared and its load moves: alternate the contenders, rotate the
            # order every round, and keep each one's best round.
            for name in names[r % len(names):] + names[: r % len(names)]:
                own = time.process_time()
                if name in offline_bs:
                    threads, t = thread_seconds(os.getpid()), time.perf_counter()
                    enc.encode(texts, batch_size=offline_bs[name], show_progress=False)
                    wall, cpu = time.perf_counter() - t, time.process_time() - own
                    threads = thread_use(threads, thread_seconds(os.getpid()), torch.get_num_threads(), None)
                else:
                    proc, url = servers[name]
                    before, model = cpu_seconds(proc.pid), metric(url, "sentembed_batch_inference_seconds_sum")
                    threads = thread_seconds(proc.pid)
                    wall, _ = load(url, multi, args.format, served if name == "batching" else None, args.client)
                    cpu = cpu_seconds(proc.pid) - before + time.process_time() - own  # server + client
                    threads = thread_use(threads, thread_seconds(proc.pid), torch.get_num_threads(), str(proc.pid))
                    model = metric(url, "sentembed_batch_inference_seconds_sum") - model
                    s_wall, lat = load(url, single, args.format, kind=args.client)
                    latencies[name] += lat
                    single_rate.setdefault(name, []).append(len(lat) / s_wall)
                runs[name].append({"sentences_per_s": len(texts) / wall, "sentences_per_cpu_s": len(texts) / cpu,
                                   "threads": threads,
                                   **({"model_seconds": model} if name in servers else {"seconds": wall})})
                print(name, f"round {r}", runs[name][-1], flush=True)
        batch_sizes = {name: mean_batch(url) for name, (_, url) in servers.items()}
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)

    sent = sorted(served)
    reference = enc.encode(sent, batch_size=batch_size, show_progress=False)
    got = np.stack([served[t] for t in sent])
    cosines = (got * reference).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(reference, axis=1)
    min_cosine = float(cosines.min())
    best = {name: max(x["sentences_per_s"] for x in rs) for name, rs in runs.items()}
    best_cpu = {name: max(x["sentences_per_cpu_s"] for x in rs) for name, rs in runs.items()}
    result = {"model": args.model, "dtype": args.dtype, "quantize": args.quantize, "serves": runs_in(enc),
              "min_cosine_to_offline": min_cosine,
              "clients": args.clients, "sentences": len(texts), "format": args.format,
              "rounds": args.rounds, "torch_threads": torch.get_num_threads(), "load_average": os.getloadavg(),
              "runs": runs, "best": best, "best_per_cpu_s": best_cpu, "mean_batch_size": batch_sizes,
              "single": {n: {"p50_ms": float(np.percentile(v, 50) * 1e3), "p99_ms": float(np.percentile(v, 99) * 1e3),
                             "percentiles_ms": {str(p): float(np.percentile(v, p) * 1e3) for p in plots.PERCENTILES},
                             "n": len(v), "sentences_per_s": max(single_rate[n])} for n, v in latencies.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    chart = plots.serve_chart(result, plots.chart_path(args.out))
    from sentembed.model.cpu import cpu

    print(f"\nCPU: {cpu().describe()}")
    print(f"{args.clients} concurrent clients; {len(texts)} STS-B sentences in {args.clients * args.requests} "
          f"requests of 1-16 per round; {args.clients * args.single} single-sentence requests per round; "
          f"best of {args.rounds} rounds; {args.model} ({describe(runs_in(enc))}), {torch.get_num_threads()} threads; "
          f"load average {os.getloadavg()[0]:.1f}\n")
    print("| | sentences/s | share of offline | sentences per CPU-second | share of offline | "
          "single-sentence p50 | p99 | single sentences/s | mean batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in servers:
        single_stats = result["single"][name]
        print(f"| server, {name} | {best[name]:.1f} | {best[name] / best['offline']:.0%} | {best_cpu[name]:.1f} | "
              f"{best_cpu[name] / best_cpu['offline']:.0%} | {single_stats['p50_ms']:.0f} ms | "
              f"{single_stats['p99_ms']:.0f} ms | {single_stats['sentences_per_s']:.1f} | {batch_sizes[name]:.1f} |")
    print(f"| offline encode, batch {batch_size} | {best['offline']:.1f} | 100% | {best_cpu['offline']:.1f} | "
          "100% | | | | |")
    b32 = "offline, batch 32"
    if b32 in best:
        print(f"| offline encode, batch 32 | {best[b32]:.1f} | {best[b32] / best['offline']:.0%} | {best_cpu[b32]:.1f} | "
              f"{best_cpu[b32] / best_cpu['offline']:.0%} | | | | |")
    share = best["batching"] / best["offline"]
    print(f"\ngoal: the batching server at >= 85% of offline encode's sentences/s: {share:.0%} "
          f"({'met' if share >= 0.85 else 'NOT met'})"
          + (f"; {best['batching'] / best[b32]:.0%} of offline batch 32" if b32 in best else ""))
    top = max(runs["batching"], key=lambda x: x["sentences_per_s"])
    busy = top["model_seconds"] * top["sentences_per_s"] / len(texts)
    print(f"the batching server's best round: its model ran {busy:.0%} of the time, its forward passes took "
          f"{top['model_seconds'] / min(x['seconds'] for x in runs['offline']):.2f}x offline encode's time for the same texts")
    team = torch.get_num_threads()
    offline = min(runs["offline"], key=lambda x: x["seconds"])

    def slept(run: dict) -> str:  # the team's seconds on a core, waiting for one, asleep
        use, span = run["threads"], team * len(texts) / run["sentences_per_s"]
        ran, waited = use["model_threads_s"], use["model_threads_waiting_s"]
        return f"ran {ran:.2f} s of {span:.2f}, waited {waited:.2f} s for a core, slept {span - ran - waited:.2f} s"

    if top["threads"]["model_threads_s"]:
        print(f"its model's {team} threads {slept(top)} (offline's best round: {slept(offline)}); its event loop ran "
              f"{top['threads']['event_loop_s'] / (args.clients * args.requests) * 1e3:.2f} ms a request, "
              f"its other threads {top['threads']['other_threads_s']:.2f} s")
    print(f"lowest cosine of a served vector to offline encode's: {min_cosine:.6f}")
    print(f"\nchart: {chart}")


if __name__ == "__main__":
    main()
