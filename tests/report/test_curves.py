"""Learning curves from CSV logs and the converged flag."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from upbench.report.curves import is_converged, plot_learning_curves, read_curve


def write_log(run_dir: Path, version: int, rows: list[tuple[int, float | None]]) -> None:
    """A Lightning-style metrics.csv: validation rows carry val/mIoU, training rows do not."""
    path = run_dir / "csv" / f"version_{version}" / "metrics.csv"
    path.parent.mkdir(parents=True)
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "step", "train/loss", "val/mIoU"])
        for epoch, value in rows:
            writer.writerow([epoch, 10 * epoch, "", "" if value is None else value])
            writer.writerow([epoch, 10 * epoch, 0.5, ""])


def test_read_curve_joins_resumed_versions_later_winning(tmp_path):
    write_log(tmp_path, 0, [(0, 0.2), (1, 0.3), (2, 0.35)])
    write_log(tmp_path, 1, [(2, 0.4), (3, 0.5)])  # resumed: epoch 2 logged again
    assert read_curve(tmp_path) == [(0, 0.2), (1, 0.3), (2, 0.4), (3, 0.5)]
    assert read_curve(tmp_path / "nothing") == []


@pytest.mark.parametrize(
    ("values", "converged"),
    [
        # 10 epochs: the window is the last 2; best before 0.80.
        ([0.3, 0.5, 0.6, 0.7, 0.75, 0.78, 0.79, 0.80, 0.803, 0.801], True),  # +0.3 points
        ([0.3, 0.5, 0.6, 0.7, 0.75, 0.78, 0.79, 0.80, 0.82, 0.84], False),  # still rising
        ([0.3, 0.5, 0.6, 0.7, 0.75, 0.78, 0.79, 0.85, 0.80, 0.79], True),  # fell: no rise
        ([0.5], None),  # too short to tell
    ],
)
def test_converged_means_no_rise_over_the_last_fifth(values, converged):
    assert is_converged(list(enumerate(values))) is converged


def test_plot_writes_one_panel_per_context(tmp_path):
    curves = [[(0, 0.2), (1, 0.4)], [(0, 0.3), (1, 0.5)]]
    path = plot_learning_curves(
        {"resnet": {"bilinear": curves}, "mobilenet": {"bilinear": curves[:1]}},
        tmp_path / "curves.png",
    )
    assert path.read_bytes().startswith(b"\x89PNG") and path.stat().st_size > 5000
