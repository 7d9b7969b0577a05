"""Convergence evidence: per-epoch validation curves read from the runs' CSV logs.

Every run with the CSV logger (``logger=default`` or ``logger=csv``) writes
``<run dir>/csv/version_*/metrics.csv``, one row per logged step; the validation rows hold
``val/mIoU`` with its ``epoch``. A resumed run appends a new ``version_*``: the curve is their
union, the later value winning for an epoch logged twice.

A run is **converged** when its validation mIoU stopped rising over the last 20 % of its epochs:
the best value inside that window beats the best value before it by at most
:data:`RISE_TOLERANCE` (half a mIoU point). A run that is still climbing at the end would have
ranked differently with a longer budget, so the report counts such runs per cell.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

CURVE_METRIC = "val/mIoU"
CONVERGENCE_WINDOW = 0.2
RISE_TOLERANCE = 0.005
CURVES_FILE = "learning_curves.png"


def read_curve(run_dir: str | Path, metric: str = CURVE_METRIC) -> list[tuple[int, float]]:
    """``[(epoch, value), ...]`` sorted by epoch, from every ``csv/version_*/metrics.csv`` of
    ``run_dir``; empty when the run wrote no CSV log."""
    by_epoch: dict[int, float] = {}
    versions = sorted(
        Path(run_dir).glob("csv/version_*/metrics.csv"),
        key=lambda p: int(p.parent.name.removeprefix("version_") or 0),
    )
    for path in versions:
        with path.open(newline="") as file:
            for line in csv.DictReader(file):
                value, epoch = line.get(metric), line.get("epoch")
                if value and epoch:
                    by_epoch[int(float(epoch))] = float(value)
    return sorted(by_epoch.items())


def is_converged(
    curve: Sequence[tuple[int, float]],
    window: float = CONVERGENCE_WINDOW,
    tolerance: float = RISE_TOLERANCE,
) -> bool | None:
    """Whether the curve stopped rising over its last ``window`` fraction of epochs (at least
    one epoch, and at least one epoch before it); ``None`` for a curve too short to tell."""
    values = [value for _, value in curve]
    tail = max(1, math.ceil(window * len(values)))
    if len(values) - tail < 1:
        return None
    return max(values[-tail:]) - max(values[:-tail]) <= tolerance


def plot_learning_curves(
    panels: dict[str, dict[str, list[list[tuple[int, float]]]]], path: str | Path
) -> Path:
    """``panels``: ``{panel title: {method: [curve of each seed]}}`` -> one subplot per panel,
    one line per method: the mean over seeds at each epoch, with a band from the lowest to the
    highest seed (so a seed that stays behind shows)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: the report runs on headless machines and in CI
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False, sharey=True
    )
    colours = plt.get_cmap("tab20").colors
    for ax, (title, methods) in zip(axes[0], panels.items(), strict=True):
        for i, (method, curves) in enumerate(sorted(methods.items())):
            by_epoch: dict[int, list[float]] = {}
            for curve in curves:
                for epoch, value in curve:
                    by_epoch.setdefault(epoch, []).append(value)
            epochs = sorted(by_epoch)
            values = [by_epoch[e] for e in epochs]
            colour = colours[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20]
            mean = [sum(v) / len(v) for v in values]
            ax.plot([e + 1 for e in epochs], mean, color=colour, label=method, lw=1.5)
            ax.fill_between(
                [e + 1 for e in epochs],
                [min(v) for v in values],
                [max(v) for v in values],
                color=colour,
                alpha=0.15,
                lw=0,
            )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"{CURVE_METRIC} (line: mean over seeds; band: min-max)")
    axes[0][-1].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
