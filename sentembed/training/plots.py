"""Charts of a training run, drawn from its log and shown in the model card: `loss.png` (the
training loss by step, the learning rate beside it) and, when the run had evaluators,
`eval.png` (each evaluation metric by step, the best step marked).

    >>> write_training_plots(trainer.log, Path("runs/x"))      # doctest: +SKIP
    [PosixPath('runs/x/loss.png'), PosixPath('runs/x/eval.png')]

matplotlib's object API only (a Figure, no pyplot): nothing global changes, no display is
needed, and the user's own backend stays as it was."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Sequence

from ..io import atomic_write

log = logging.getLogger(__name__)

LOSS_PLOT, EVAL_PLOT = "loss.png", "eval.png"
TITLES = {LOSS_PLOT: "Training loss and learning rate by step", EVAL_PLOT: "Evaluation metrics by step"}


def write_training_plots(entries: Sequence[dict], out_dir: Path) -> list[Path]:
    """Draw the log's charts into out_dir; returns the files written (none for an empty log)."""
    try:
        import matplotlib  # noqa: F401  (each figure imports what it draws with)
    except ImportError:  # a declared dependency; a run must not fail at its end for a chart
        log.warning("matplotlib is not installed: no training plots")
        return []
    written = []
    losses = [e for e in entries if "loss" in e]
    if losses:
        written.append(_save(_loss_figure(losses), Path(out_dir) / LOSS_PLOT))
    evals = [e for e in entries if "eval" in e]
    if evals:
        written.append(_save(_eval_figure(evals), Path(out_dir) / EVAL_PLOT))
    return written


def _loss_figure(losses: list[dict]) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    steps = [e["step"] for e in losses]
    ax.plot(steps, [e["loss"] for e in losses], color="tab:blue", marker="." if len(steps) < 50 else None,
            label="training loss")
    ax.set(xlabel="step", ylabel="loss", title="Training loss")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if all("lr" in e for e in losses):  # the warmup and decay explain the loss's early shape
        lr = ax.twinx()
        lr.plot(steps, [e["lr"] for e in losses], color="0.6", linestyle="--", linewidth=1, label="learning rate")
        lr.set_ylabel("learning rate", color="0.4")
        lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        fig.legend(loc="outside lower center", ncols=2, frameon=False)
    return fig


def _eval_figure(evals: list[dict]) -> Any:
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    names = sorted({k for e in evals for k in e["eval"] if k != "primary"})
    cols = min(3, len(names)) or 1
    rows = math.ceil(len(names) / cols) or 1
    fig = Figure(figsize=(max(5.0, 3.4 * cols + 0.6), 2.8 * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    scored = [e for e in evals if "primary" in e["eval"]]
    best = max(scored, key=lambda e: e["eval"]["primary"])["step"] if scored else None
    for ax, name in zip(axes, names):
        points = [(e["step"], e["eval"][name]) for e in evals if name in e["eval"]]
        ax.plot(*zip(*points), marker="o", markersize=3, color="tab:green")
        if best is not None:  # the step the first evaluator's primary metric liked best
            ax.axvline(best, color="0.5", linestyle=":", linewidth=1, label=f"best, step {best}")
            ax.legend(fontsize="small", frameon=False)
        ax.set_title(name, fontsize="medium")
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle("Evaluation")
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    return path
