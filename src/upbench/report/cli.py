"""Command line of the table builder.

Build::

    python -m upbench.report logs/train/multirun/2024-05-01_10-00-00-000000 [MORE_DIRS] \
        [--out DIR] [--profile-shape N C H W --scale S] [--no-profile] [--num-images K]

writes ``results.{md,csv,tex}``, ``runs.csv`` (one row per run), ``comparisons.csv`` (paired,
Holm-corrected tests between upsamplers), ``summary.md`` (one line per upsampler; also printed),
``learning_curves.png``, ``accuracy_vs_params.png``, ``accuracy_vs_latency.png`` and
``predictions_<data>.png`` (``predictions_<data>_<backbone>.png`` when the backbone varies too) to
``--out`` (default: the first run directory).

Check (reruns nothing)::

    python -m upbench.report --check COMMITTED_DIR NEW_RUN_DIR [...]

rebuilds the table from the new runs and compares every metric cell with ``COMMITTED_DIR/
results.csv``: a cell differs when ``|mean_new - mean_old| > k * max(std_old, std_new, eps)``
(``--k 2``, ``--eps 1e-6``), i.e. when the means moved by more than k seed standard deviations;
a status cell ("failed") differs unless it is the same status. Profile columns (machine-
dependent) are not compared. Exit code 1 when any cell differs.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from upbench.profile import DEFAULT_SCALE, DEFAULT_SHAPE, profile_upsampler
from upbench.report.curves import CURVES_FILE, plot_learning_curves
from upbench.report.summary import SUMMARY_FILE, summary_markdown
from upbench.report.table import (
    ReportTable,
    build_table,
    compare_cells,
    context_of,
    find_records,
    read_csv_cells,
    table_cells,
)


def profile_upsamplers(
    run_dirs: Sequence[str | Path],
    shape: Sequence[int],
    scale: int,
    device: str = "cpu",
    repeats: int = 20,
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """One profile per distinct upsampler choice, built from the config its runs used."""
    records, _ = find_records(run_dirs)
    configs: dict[str, Any] = {}
    for record in records:
        configs.setdefault(
            record["choices"]["upsampler"], (record.get("config") or {}).get("upsampler")
        )
    profiles, notes = {}, []
    for name, cfg in sorted(configs.items()):
        try:
            profile = profile_upsampler(cfg or name, shape, scale, device, repeats)
        except Exception as error:  # one broken upsampler must not sink the whole table
            notes.append(f"profile of {name} failed: {type(error).__name__}: {error}")
            continue
        profile["upsampler"] = name
        profiles[name] = profile
        if profile["skipped"]:
            notes.append(f"profile of {name} skipped: {profile['skipped']}")
    return profiles, notes


def learning_curves(table: ReportTable, out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """``learning_curves.png``: one panel per context (e.g. per backbone), one line per
    upsampler, from the runs' CSV logs."""
    panels: dict[str, dict[str, list]] = {}
    for row in table.rows:
        curves = [run["_curve"] for run in row.finished if run.get("_curve")]
        if curves:
            panel = panels.setdefault(context_of(row.choices), {})
            panel[row.choices["upsampler"]] = curves
    if not panels:
        return [], [f"{CURVES_FILE} skipped: no finished run has a CSV log"]
    return [plot_learning_curves(panels, Path(out_dir) / CURVES_FILE)], []


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m upbench.report",
        description="Mean ± std tables (Markdown, CSV, LaTeX) and plots from results.json files.",
    )
    parser.add_argument("run_dirs", nargs="+", type=Path, help="run or multirun directories")
    parser.add_argument("--out", type=Path, help="output directory (default: first RUN_DIR)")
    parser.add_argument(
        "--profile-shape",
        nargs=4,
        type=int,
        metavar=("N", "C", "H", "W"),
        default=list(DEFAULT_SHAPE),
    )
    parser.add_argument("--scale", type=int, default=DEFAULT_SCALE)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=20, help="timed profiler repeats")
    parser.add_argument("--no-profile", action="store_true", help="skip the upsampler profile")
    parser.add_argument("--no-plots", action="store_true", help="write the tables only")
    parser.add_argument("--num-images", type=int, default=4, help="images in the prediction grid")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="COMMITTED_DIR",
        help="compare with COMMITTED_DIR/results.csv instead of writing",
    )
    parser.add_argument("--k", type=float, default=2.0, help="--check: seed stds allowed")
    parser.add_argument("--eps", type=float, default=1e-6, help="--check: std floor")
    return parser.parse_args(argv)


def check(committed: Path, table: ReportTable, k: float, eps: float) -> int:
    diffs = compare_cells(read_csv_cells(committed), table_cells(table), k, eps)
    console = Console(soft_wrap=True)
    if not diffs:
        console.print(f"[green]All cells agree with {committed} within {k} x seed std.[/]")
        return 0
    console.print(f"[red]{len(diffs)} cell(s) differ from {committed} beyond {k} x seed std:[/]")
    for line in diffs:
        console.print(f"  {line}", markup=False)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.check is not None:
        return check(args.check, build_table(args.run_dirs), args.k, args.eps)
    profiles, notes = {}, []
    if not args.no_profile:
        profiles, notes = profile_upsamplers(
            args.run_dirs, args.profile_shape, args.scale, args.device, args.repeats
        )
    table = build_table(args.run_dirs, profiles)
    table.notes += notes  # e.g. "profile of maxunpool skipped: ..." belongs in the caption
    out = args.out or args.run_dirs[0]
    summary = summary_markdown(table)
    summary_path = Path(out) / SUMMARY_FILE
    written = table.write(out)  # creates the directory
    summary_path.write_text(summary)
    written.append(summary_path)
    plot_notes: list[str] = []
    if not args.no_plots:
        from upbench.report.plots import prediction_grids, scatter_plots

        for files, messages in (
            learning_curves(table, out),
            scatter_plots(table, out),
            prediction_grids(table, out, args.num_images),
        ):
            written += files
            plot_notes += messages
    console = Console(soft_wrap=True)
    console.print(summary, markup=False)
    for note in table.notes + plot_notes:
        console.print(f"note: {note}", markup=False)
    for path in written:
        console.print(f"wrote {path}", markup=False)
    return 0
