"""The at-a-glance view of a table (``summary.md``): one line per upsampler, best first.

``results.md`` holds every metric twice (best-validation checkpoint and final weights) with n per
cell, too wide to read at a glance. The summary keeps the best-validation checkpoint (what papers
quote) and, when only the upsampler varies, the metrics where upsamplers differ plus their cost;
when another group varies too (the backbone in ``upsamplers_x_backbones``), one column per value
of it, each holding the headline metric, and their mean, so a method reads across backbones on one
line.

Cells are mean ± half-width of the 95 % confidence interval over seeds. A cell in **bold** is not
significantly worse than the best method of its column (paired t-test by seed, Holm-corrected
over the table's family: ``comparisons.csv``, :mod:`upbench.report.stats`); the best is bold too.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from upbench.metrics import compared_metrics
from upbench.report.format import format_count, format_metric, format_ms
from upbench.report.table import (
    COMPARISONS_FILE,
    GROUP_KEYS,
    REFERENCE,
    ReportTable,
    Row,
    Stat,
    context_of,
    format_cell,
    metric_label,
    missed_classes,
    percent_metrics,
    varying_groups,
)

SOURCE = "best_metrics"
HEADLINE = "test/mIoU"
PROFILE_COLUMNS = (
    ("params", "upsampler params", format_count),
    ("latency_fwd_bwd_ms", "fwd+bwd ms", format_ms),
)
SUMMARY_FILE = "summary.md"
SHORT_DIGITS = (1, 2)  # decimals of percent and other metrics
_BOLD = (
    "Bold: not significantly worse than the column's best (paired t-test over seeds, Holm-"
    f"corrected over the table, α = 0.05; every test, also against {REFERENCE}, in "
    f"{COMPARISONS_FILE})."
)


def _short(stat: Stat | None, row: Row, percent: bool, full_n: int, tied: bool = False) -> str:
    """mean ± 95 % CI half-width, with n only where fewer seeds finished than in the table's
    fullest cell; bold when ``tied`` with the best."""
    show_n = stat is not None and stat.n != full_n
    text = format_cell(stat, row, percent, digits=SHORT_DIGITS, show_n=show_n, spread="ci")
    return f"**{text}**" if tied and stat is not None else text


def _is_tied(table: ReportTable, row: Row, metric: str) -> bool:
    tied = table.comparisons.tied_with_best(context_of(row.choices), metric)
    return row.choices["upsampler"] in tied


def _stability_note(table: ReportTable) -> str:
    collapsed = sum(row.collapsed for row in table.rows)
    finished = sum(len(row.finished) for row in table.rows)
    note = f" {collapsed} of {finished} finished runs predict a single class everywhere"
    missing = [(row, run) for row in table.rows for run in row.missing_a_class]
    if not missing:
        return note + "; none misses a class (test IoU < 1 %)."
    varying = [group for group in varying_groups(table.rows) if group != "upsampler"]
    named = ", ".join(
        "/".join(row.choices[group] for group in ("upsampler", *varying))
        + f" seed {run['seed']} ({', '.join(missed_classes(run))})"
        for row, run in missing[:5]
    )
    more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
    verb = "misses" if len(missing) == 1 else "miss"
    return note + f"; {len(missing)} {verb} a class (test IoU < 1 %): {named}{more} (runs.csv)."


def _full_n(table: ReportTable) -> int:
    return max((len(row.finished) for row in table.rows), default=0)


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
    metrics = [m for m in compared_metrics() if m in table.metrics]
    header = ["upsampler", "runs", "converged"]
    header += [metric_label(m, m in percent) for m in metrics]
    if table.profiles:
        header += [label for _, label, _ in PROFILE_COLUMNS]
    full_n = _full_n(table)
    lines = []
    for row in sorted(table.rows, key=_headline_mean, reverse=True):
        cells = [row.choices["upsampler"], row.status_text(), row.converged_text()]
        cells += [
            _short(row.cells[SOURCE, m], row, m in percent, full_n, _is_tied(table, row, m))
            for m in metrics
        ]
        if table.profiles:
            profile = table.profiles.get(row.choices["upsampler"]) or {}
            cells += [fmt(profile.get(name)) for name, _, fmt in PROFILE_COLUMNS]
        lines.append(cells)
    fixed = ", ".join(f"{k} {table.rows[0].choices[k]}" for k in GROUP_KEYS if k != "upsampler")
    caption = (
        "Test metrics of the best-validation checkpoint, mean ± 95 % CI half-width over the "
        f"finished seeds ({fixed}); best {metric_label(HEADLINE, False)} first. {_BOLD} "
        f"'converged': runs whose val mIoU stopped rising over the last 20 % of epochs."
        f"{_stability_note(table)} Every metric, the final weights and how the upsampler cost "
        "was measured: results.md."
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

    full_n = _full_n(table)
    means = {upsampler: mean_over_columns(rows) for upsampler, rows in by_upsampler.items()}
    ranked = sorted(by_upsampler, key=lambda upsampler: -(means[upsampler] or float("-inf")))
    lines = []
    for upsampler in ranked:
        rows, mean = by_upsampler[upsampler], means[upsampler]
        cells = [upsampler]
        cells += [
            _short(
                rows[c].cells[SOURCE, HEADLINE],
                rows[c],
                percent,
                full_n,
                _is_tied(table, rows[c], HEADLINE),
            )
            if c in rows
            else "-"
            for c in columns
        ]
        cells.append("-" if mean is None else format_metric(mean, percent, SHORT_DIGITS))
        lines.append(cells)
    label = metric_label(HEADLINE, percent)
    caption = (
        f"Test {label} of the best-validation checkpoint, mean ± 95 % CI half-width over the "
        f"finished seeds, by {'/'.join(varying)}; the last column is the mean over the "
        f"{'/'.join(varying)} columns (shown only when every one has a number). {_BOLD}"
        f"{_stability_note(table)} Every metric: results.md."
    )
    return _markdown(["upsampler", *columns, f"mean {label}"], lines, caption)
