"""The at-a-glance view of a table (``summary.md``): one line per upsampler, best first.

``results.md`` holds every metric twice (best-validation checkpoint and final weights) with n per
cell, too wide to read at a glance. The summary keeps the best-validation checkpoint (what papers
quote) and, when only the upsampler varies, the metrics where upsamplers differ plus their cost;
when another group varies too (the backbone in ``upsamplers_x_backbones``), one column per value
of it, each holding the headline metric, and their mean, so a method reads across backbones on one
line.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from upbench.profile import format_count, format_ms
from upbench.report.table import (
    GROUP_KEYS,
    ReportTable,
    Row,
    Stat,
    percent_metrics,
    varying_groups,
)

SOURCE = "best_metrics"
HEADLINE = "test/mIoU"
COMPARED_METRICS = ("test/mIoU", "test/bIoU", "test/bF", "test/thin_recall", "test/checkerboard")
PROFILE_COLUMNS = (
    ("params", "upsampler params", format_count),
    ("latency_fwd_bwd_ms", "fwd+bwd ms", format_ms),
)
SUMMARY_FILE = "summary.md"


def _short(stat: Stat | None, row: Row, percent: bool, full_n: int) -> str:
    """mean ± std, with n only where fewer seeds finished than in the table's fullest cell."""
    if stat is None:
        return row.placeholder()
    factor, digits = (100.0, 1) if percent else (1.0, 2)
    text = f"{stat.mean * factor:.{digits}f}"
    if stat.std is not None:
        text += f" ± {stat.std * factor:.{digits}f}"
    return text if stat.n == full_n else f"{text} (n={stat.n})"


def _full_n(table: ReportTable) -> int:
    return max((len(row.finished) for row in table.rows), default=0)


def _label(metric: str, percent: bool) -> str:
    return metric.removeprefix("test/") + (" (%)" if percent else "")


def _markdown(header: Sequence[str], lines: Sequence[Sequence[str]], caption: str) -> str:
    out = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    out += ["| " + " | ".join(cells) + " |" for cells in lines]
    return "\n".join(out) + f"\n\n> {caption}\n"


def _headline_mean(row: Row) -> float:
    stat = row.cells.get((SOURCE, HEADLINE))
    return stat.mean if stat is not None else float("-inf")


def summary_markdown(table: ReportTable) -> str:
    """The summary of ``table`` as Markdown (see the module docstring)."""
    percent = percent_metrics(table.rows, table.metrics)
    varying = varying_groups(table.rows)
    if varying:
        return _pivot(table, varying, HEADLINE in percent)
    metrics = [m for m in COMPARED_METRICS if m in table.metrics]
    header = ["upsampler", "runs", *(_label(m, m in percent) for m in metrics)]
    if table.profiles:
        header += [label for _, label, _ in PROFILE_COLUMNS]
    lines = []
    for row in sorted(table.rows, key=_headline_mean, reverse=True):
        cells = [row.choices["upsampler"], row.status_text()]
        cells += [_short(row.cells[SOURCE, m], row, m in percent, _full_n(table)) for m in metrics]
        if table.profiles:
            profile = table.profiles.get(row.choices["upsampler"]) or {}
            cells += [fmt(profile.get(name)) for name, _, fmt in PROFILE_COLUMNS]
        lines.append(cells)
    fixed = ", ".join(f"{k} {table.rows[0].choices[k]}" for k in GROUP_KEYS if k != "upsampler")
    caption = (
        f"Test metrics of the best-validation checkpoint, mean ± sample std over the finished "
        f"seeds ({fixed}); best {_label(HEADLINE, False)} first. Every metric, the final weights "
        "and how the upsampler cost was measured: results.md."
    )
    return _markdown(header, lines, caption)


def _pivot(table: ReportTable, varying: Sequence[str], percent: bool) -> str:
    def column(row: Row) -> str:
        return "/".join(row.choices[k] for k in varying)

    columns = sorted({column(row) for row in table.rows})
    by_upsampler: dict[str, dict[str, Row]] = {}
    for row in table.rows:
        by_upsampler.setdefault(row.choices["upsampler"], {})[column(row)] = row

    def mean_over_columns(rows: dict[str, Row]) -> float | None:
        stats = [rows[c].cells.get((SOURCE, HEADLINE)) if c in rows else None for c in columns]
        if any(stat is None for stat in stats):
            return None  # a mean over the columns that happened to finish would mislead
        return statistics.fmean(stat.mean for stat in stats)

    factor = 100.0 if percent else 1.0
    ranked = sorted(
        by_upsampler.items(),
        key=lambda item: -(mean_over_columns(item[1]) or float("-inf")),
    )
    lines = []
    for upsampler, rows in ranked:
        cells = [upsampler]
        cells += [
            _short(rows[c].cells[SOURCE, HEADLINE], rows[c], percent, _full_n(table))
            if c in rows
            else "-"
            for c in columns
        ]
        mean = mean_over_columns(rows)
        cells.append("-" if mean is None else f"{mean * factor:.{1 if percent else 2}f}")
        lines.append(cells)
    label = _label(HEADLINE, percent)
    caption = (
        f"Test {label} of the best-validation checkpoint, mean ± sample std over the finished "
        f"seeds, by {'/'.join(varying)}; the last column is the mean over the {'/'.join(varying)} "
        "columns (shown only when every one has a number). Every metric: results.md."
    )
    return _markdown(["upsampler", *columns, f"mean {label}"], lines, caption)


def write_summary(table: ReportTable, out_dir: str | Path) -> Path:
    path = Path(out_dir) / SUMMARY_FILE
    path.write_text(summary_markdown(table))
    return path
