"""The benchmarks' charts, drawn from the results each script writes, next to its table:
the chart of `results/encode.json` is `results/encode.png`.

- encode_chart: tokens/s of every variant, one panel per text set, the GEMM ceilings as lines;
- serve_chart: latency percentiles under load, one line per server configuration;
- search_chart: recall@10 against queries/s for the ANN kinds, exact search's rate as a line.

    python benchmarks/plots.py benchmarks/results/serve.json    # redraw a chart from its results

matplotlib's Figure API only (no pyplot): no display, no global state."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ANN_KINDS = ("hnsw", "ivfpq")
PERCENTILES = (50, 90, 95, 99)
RECALL_GOAL = 0.95
# The ceilings share one colour family: the fp32 one darkest.
_CEILING_STYLE = {"fp32": ("0.15", "-"), "bf16": ("0.4", "--"), "int8": ("0.6", ":")}


def chart_path(table: str | Path) -> Path:
    """Where the chart of a results file goes: beside it, same name, .png."""
    return Path(table).with_suffix(".png")


def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def encode_chart(result: dict, path: str | Path) -> Path:
    """Tokens/s by variant (ours blue, the reference's grey), each text set a panel; the fp32,
    bf16 and int8 GEMM ceilings (tokens/s at the model's FLOP a token) as vertical lines.

    result: what encode.py writes: {"rows": [{set, variant, tokens_per_s, ...}], "ceilings": {precision: tok/s}}."""
    rows = [r for r in result["rows"] if "tokens_per_s" in r]
    sets = list(dict.fromkeys(r["set"] for r in rows))
    variants = max((len([r for r in rows if r["set"] == s]) for s in sets), default=1)
    fig = _figure(6.0 * max(1, len(sets)), 1.2 + 0.32 * variants)
    axes = fig.subplots(1, max(1, len(sets)), squeeze=False)[0]
    ceilings = result.get("ceilings", {})
    for ax, name in zip(axes, sets):
        mine = sorted((r for r in rows if r["set"] == name), key=lambda r: r["tokens_per_s"])
        colors = ["tab:blue" if r["variant"].startswith("se-") else "0.65" for r in mine]
        ax.barh([r["variant"] for r in mine], [r["tokens_per_s"] for r in mine], color=colors)
        for precision, rate in ceilings.items():
            color, style = _CEILING_STYLE.get(precision, ("0.5", "-."))
            ax.axvline(rate, color=color, linestyle=style, linewidth=1.2, label=f"{precision} ceiling")
        ax.set(title=name, xlabel="tokens/s")
        ax.grid(axis="x", alpha=0.3)
    if ceilings:
        axes[0].legend(loc="lower right", fontsize="small")
    fig.suptitle("Encoding throughput (blue: sentembed, grey: sentence-transformers)")
    return _save(fig, path)


def serve_chart(result: dict, path: str | Path) -> Path:
    """Single-sentence latency percentiles under load, one line per server configuration.

    result: what serve.py writes: {"single": {name: {"percentiles_ms": {"50": ms, ...}}}, "clients": n}."""
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    for name, stats in result["single"].items():
        # results from before percentiles_ms have p50 and p99 only
        given = stats.get("percentiles_ms") or {"50": stats["p50_ms"], "99": stats["p99_ms"]}
        points = sorted((float(p), ms) for p, ms in given.items())
        ax.plot([f"p{p:g}" for p, _ in points], [ms for _, ms in points], marker="o", label=f"server, {name}")
    clients = result.get("clients")
    ax.set(ylabel="latency (ms)", xlabel="percentile",
           title="One-sentence requests" + (f", {clients} concurrent clients" if clients else ""))
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def search_chart(result: dict, path: str | Path) -> Path:
    """Recall@10 against queries/s for each ANN kind (one point per search-width setting);
    exact search's queries/s and the recall goal as lines.

    result: what search.py writes: {kind: {"sweep": [{"recall@10", "qps", <param>}], "exact_qps", "rows"}}."""
    fig = _figure(6.5, 4.0)
    ax = fig.subplots()
    exact = exact_rows = None
    for kind in ANN_KINDS:
        if kind not in result:
            continue
        run = result[kind]
        if exact is None and run.get("exact_qps"):
            exact, exact_rows = run["exact_qps"], run.get("rows")
        sweep = run["sweep"]
        rows = f" ({run['rows']:,} rows)" if run.get("rows") else ""
        ax.plot([s["qps"] for s in sweep], [s["recall@10"] for s in sweep], marker="o", label=kind + rows)
        param = next((k for k in sweep[0] if k not in ("recall@10", "qps")), None) if sweep else None
        for s in sweep if param else ():
            ax.annotate(f"{s[param]}", (s["qps"], s["recall@10"]), textcoords="offset points", xytext=(4, -10),
                        fontsize="x-small", color="0.35")
    if exact:
        ax.axvline(exact, color="0.3", linestyle="--", linewidth=1,
                   label="exact search" + (f" ({exact_rows:,} rows)" if exact_rows else ""))
    ax.axhline(RECALL_GOAL, color="0.6", linestyle=":", linewidth=1, label=f"recall {RECALL_GOAL}")
    ax.set_xscale("log")
    ax.set(xlabel="queries/s (log)", ylabel="recall@10 against exact", title="Approximate search")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    return _save(fig, path)


def redraw(results: str | Path) -> Path:
    """Draw the chart of a results file written by encode.py, serve.py or search.py."""
    result = json.loads(Path(results).read_text())
    if "rows" in result:
        return encode_chart(result, chart_path(results))
    if "single" in result:
        return serve_chart(result, chart_path(results))
    if any(k in result for k in ANN_KINDS):
        return search_chart(result, chart_path(results))
    raise ValueError(f"{results}: not the results of encode.py, serve.py or search.py")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for name in sys.argv[1:]:
        print(redraw(name))
