"""Collect ``results.json`` records, aggregate them over seeds and write Markdown / CSV / LaTeX.

One row per (backbone, upsampler, decoder, data). Each metric cell is mean ± sample std over the
finished seeds (n shown), for the best-validation checkpoint (``best_metrics``, what papers in
this field quote) and for the final weights (``metrics``). Groups without a finished run keep
their row, with the status ("failed", "interrupted", "running") in place of the numbers.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upbench.metrics import compared_metrics, lower_is_better, non_fractions
from upbench.profile import hand_count_footnote
from upbench.report.curves import is_converged, read_curve
from upbench.report.format import format_count, format_mean, format_mib, format_ms
from upbench.report.stats import CSV_HEADER, ComparisonFamily, ci_half_width, comparisons
from upbench.results import RESULTS_FILE

GROUP_KEYS = ("backbone", "upsampler", "decoder", "data")
# Shown in this order; "finished" first so the status column reads "2 finished, 1 failed".
STATUSES = ("finished", "running", "interrupted", "failed")
# (record field, label): the best-validation checkpoint first, as papers quote it.
SOURCES = (("best_metrics", "best-val ckpt"), ("metrics", "final weights"))
LEADING_METRICS = ("test/mIoU", "test/pixel_acc")
# The metrics declared ``compared`` (upbench.metrics) are tested pairwise (comparisons.csv) on
# the best-validation checkpoint, against REFERENCE and against the best method of each context.
TESTED_SOURCE = "best_metrics"
REFERENCE = "bilinear"
COMPARISONS_FILE = "comparisons.csv"
PROFILE_COLUMNS = (
    ("params", "upsampler params", format_count),
    ("flops", "FLOPs", format_count),
    ("latency_fwd_ms", "fwd ms", format_ms),
    ("latency_fwd_bwd_ms", "fwd+bwd ms", format_ms),
    ("peak_memory_bytes", "peak MiB", format_mib),
)


def find_records(run_dirs: Iterable[str | Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every ``results.json`` under ``run_dirs`` (recursively), each with ``_path``, ``_curve``
    (its per-epoch validation mIoU from the CSV log) and ``_converged`` added.

    Returns ``(records, notes)``; an unreadable file becomes a note rather than a silent gap.
    """
    records, notes, seen = [], [], set()
    for run_dir in run_dirs:
        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"run directory {run_dir} does not exist")
        for path in sorted(run_dir.rglob(RESULTS_FILE)):
            if path.resolve() in seen:
                continue
            seen.add(path.resolve())
            try:
                record = json.loads(path.read_text())
                record["choices"] = {k: str(record["choices"][k]) for k in GROUP_KEYS}
            except (OSError, ValueError, KeyError, TypeError) as error:
                notes.append(f"unreadable {path}: {type(error).__name__}: {error}")
                continue
            record["_path"] = str(path)
            record["_curve"] = read_curve(path.parent)
            record["_converged"] = is_converged(record["_curve"])
            records.append(record)
    return records, notes


def is_table_metric(key: str) -> bool:
    """Every test metric except the loss and the per-class IoUs."""
    return key.startswith("test/") and key != "test/loss" and not key.startswith("test/IoU_")


def metric_keys(records: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = {
        key
        for record in records
        if record["status"] == "finished"
        for source, _ in SOURCES
        for key in record.get(source) or {}
        if is_table_metric(key)
    }
    leading = [k for k in LEADING_METRICS if k in keys]
    return leading + sorted(keys - set(leading))


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation and half-width of the 95 % t confidence interval of the
    mean (both ``None`` when n < 2) of a cell's finished seeds."""

    mean: float
    std: float | None
    n: int
    ci: float | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat | None:
        if not values:
            return None
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values), ci_half_width(values))


# A class whose test IoU is below this is not predicted (or only in stray pixels).
MISSED_IOU = 0.01


def _class_ious(record: Mapping[str, Any]) -> dict[str, float]:
    source = record.get("best_metrics") or record.get("metrics") or {}
    prefix = "test/IoU_"
    ious = {k[len(prefix) :]: v for k, v in source.items() if k.startswith(prefix)}
    return {name: iou for name, iou in ious.items() if iou is not None}


def missed_classes(record: Mapping[str, Any]) -> list[str]:
    """The classes the run fails to find: test IoU below 1 % (a run can lose one small class,
    e.g. CSF, while the others are fine)."""
    return sorted(name for name, iou in _class_ious(record).items() if iou < MISSED_IOU)


def is_collapsed(record: Mapping[str, Any]) -> bool:
    """The run predicts one class everywhere (the all-background solution): every class but one
    is missed."""
    ious = _class_ious(record)
    return len(ious) > 1 and len(missed_classes(record)) >= len(ious) - 1


def context_of(choices: Mapping[str, str]) -> str:
    """What a comparison of upsamplers holds fixed: the other groups' choices."""
    return "/".join(choices[k] for k in GROUP_KEYS if k != "upsampler")


def varying_groups(rows: Sequence[Row]) -> list[str]:
    """The groups other than the upsampler that take more than one value across ``rows``."""
    return [
        key
        for key in GROUP_KEYS
        if key != "upsampler" and len({row.choices[key] for row in rows}) > 1
    ]


@dataclass
class Row:
    key: tuple[str, ...]
    runs: list[dict[str, Any]]  # every record of the group, by seed
    cells: dict[tuple[str, str], Stat | None] = field(default_factory=dict)

    @property
    def status_counts(self) -> dict[str, int]:
        return {s: sum(r["status"] == s for r in self.runs) for s in STATUSES}

    @property
    def finished(self) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["status"] == "finished"]

    @property
    def choices(self) -> dict[str, str]:
        return dict(zip(GROUP_KEYS, self.key, strict=True))

    def converged_text(self) -> str:
        """``k/n``: finished runs whose validation mIoU had stopped rising (``-`` without
        curves)."""
        flags = [r["_converged"] for r in self.finished if r.get("_converged") is not None]
        return f"{sum(flags)}/{len(flags)}" if flags else "-"

    @property
    def collapsed(self) -> int:
        return sum(is_collapsed(r) for r in self.finished)

    @property
    def missing_a_class(self) -> list[dict[str, Any]]:
        """Finished runs that miss a class without collapsing."""
        return [r for r in self.finished if missed_classes(r) and not is_collapsed(r)]

    def status_text(self) -> str:
        return ", ".join(f"{self.status_counts[s]} {s}" for s in STATUSES if self.status_counts[s])

    def placeholder(self) -> str:
        """What a cell without numbers says: the statuses of the group's runs."""
        if self.status_counts["finished"]:
            return "n/a"  # finished runs that did not record this metric
        return "/".join(s for s in STATUSES if self.status_counts[s])


def build_rows(records: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> list[Row]:
    groups: dict[tuple[str, ...], list[Mapping[str, Any]]] = {}
    for record in records:
        if record["status"] not in STATUSES:
            raise ValueError(f"{record['_path']}: unknown status {record['status']!r}")
        groups.setdefault(tuple(record["choices"][k] for k in GROUP_KEYS), []).append(record)
    rows = []
    for key in sorted(groups):
        group = sorted(groups[key], key=lambda r: (r["seed"], r["_path"]))
        row = Row(key, group)
        for source, _ in SOURCES:
            for metric in metrics:
                values = [
                    r[source][metric]
                    for r in row.finished
                    if (r.get(source) or {}).get(metric) is not None
                ]
                row.cells[source, metric] = Stat.of(values)
        rows.append(row)
    return rows


def percent_metrics(rows: Sequence[Row], metrics: Sequence[str]) -> set[str]:
    """Metrics whose every value lies in [0, 1], except those declared not to be shares (the
    checkerboard ratio): shown x100, as papers quote mIoU in %."""
    out = set()
    ratios = non_fractions()
    for metric in metrics:
        if metric in ratios:
            continue
        values = [
            v
            for row in rows
            for source, _ in SOURCES
            for r in row.finished
            if (v := (r.get(source) or {}).get(metric)) is not None
        ]
        if values and all(0.0 <= v <= 1.0 for v in values):
            out.add(metric)
    return out


def metric_label(metric: str, percent: bool) -> str:
    return f"{metric.removeprefix('test/')}{' (%)' if percent else ''}"


def column_label(source_label: str, metric: str, percent: bool) -> str:
    return f"{metric_label(metric, percent)} [{source_label}]"


def format_cell(
    stat: Stat | None,
    row: Row,
    percent: bool,
    latex: bool = False,
    digits: tuple[int, int] = (2, 4),
    show_n: bool = True,
    spread: str = "std",
) -> str:
    """``mean ± spread (n=k)``, or the row's status when there are no numbers; ``digits`` are the
    decimals of (percent, other) metrics; ``spread`` is ``"std"`` (sample std) or ``"ci"`` (95 %
    confidence half-width)."""
    if stat is None:
        return row.placeholder()
    half = stat.std if spread == "std" else stat.ci
    text = format_mean(stat.mean, half, percent, digits, latex)
    return f"{text} (n={stat.n})" if show_n else text


def compare_rows(rows: Sequence[Row]) -> ComparisonFamily:
    """The paired, Holm-corrected comparisons of the compared metrics within each context."""
    values: dict[str, dict[str, dict[str, dict[int, float]]]] = {}
    for row in rows:
        by_metric = values.setdefault(context_of(row.choices), {})
        for metric in compared_metrics():
            by_metric.setdefault(metric, {})[row.choices["upsampler"]] = {
                r["seed"]: r[TESTED_SOURCE][metric]
                for r in row.finished
                if (r.get(TESTED_SOURCE) or {}).get(metric) is not None
            }
    return comparisons(values, REFERENCE, lower_is_better())


@dataclass
class ReportTable:
    rows: list[Row]
    metrics: list[str]
    profiles: dict[str, dict[str, Any]]
    notes: list[str]
    comparisons: ComparisonFamily = field(default_factory=lambda: ComparisonFamily([], {}))

    def header(self) -> list[str]:
        percent = percent_metrics(self.rows, self.metrics)
        cols = [*GROUP_KEYS, "runs"]
        cols += [column_label(label, m, m in percent) for _, label in SOURCES for m in self.metrics]
        if self.profiles:
            cols += [label for _, label, _ in PROFILE_COLUMNS]
        return cols

    def display_rows(self, latex: bool = False) -> list[list[str]]:
        percent = percent_metrics(self.rows, self.metrics)
        out = []
        for row in self.rows:
            cells = [*row.key, row.status_text()]
            cells += [
                format_cell(row.cells[source, m], row, m in percent, latex)
                for source, _ in SOURCES
                for m in self.metrics
            ]
            if self.profiles:
                profile = self.profiles.get(row.choices["upsampler"])
                cells += [_profile_cell(profile, name, fmt) for name, _, fmt in PROFILE_COLUMNS]
            out.append(cells)
        return out

    def caption(self) -> str:
        lines = [
            "Mean ± sample std over seeds (n = finished seeds) of the test metrics, for the "
            "best-validation checkpoint ('best-val ckpt', what papers quote) and for the final "
            "weights ('final weights'). Metrics within [0, 1] are shown in %. A group with no "
            "finished run shows its runs' status instead of numbers."
        ]
        measured = [p for p in self.profiles.values() if p.get("flops") is not None]
        if self.profiles:
            first = next(iter(self.profiles.values()))
            n, c, h, w = first["shape"]
            lines.append(
                f"Upsampler cost from upbench.profile: one upsampler on an input (N={n}, C={c}, "
                f"H={h}, W={w}), scale x{first['scale']}, in = out = {c} channels, on "
                f"{first['device']}; latency is the median after warm-up; peak memory: "
                f"{first['memory_method']}."
            )
            if measured:
                lines.append(hand_count_footnote(measured))
        return "\n".join(lines + self.notes)

    def to_markdown(self) -> str:
        header = self.header()
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(cells) + " |" for cells in self.display_rows()]
        caption = "\n".join(f"> {line}" for line in self.caption().splitlines())
        return "\n".join(lines) + "\n\n" + caption + "\n"

    def to_latex(self) -> str:
        header = [_latex_escape(h) for h in self.header()]
        body = [
            " & ".join(c if c.startswith("$") else _latex_escape(c) for c in cells) + r" \\"
            for cells in self.display_rows(latex=True)
        ]
        return "\n".join(
            [
                r"\begin{table}[t]",
                r"\centering",
                r"\caption{" + _latex_escape(self.caption().replace("\n", " ")) + "}",
                r"\begin{tabular}{" + "l" * len(GROUP_KEYS) + "l" + "r" * (len(header) - 5) + "}",
                r"\toprule",
                " & ".join(header) + r" \\",
                r"\midrule",
                *body,
                r"\bottomrule",
                r"\end{tabular}",
                r"\end{table}",
                "",
            ]
        )

    def csv_header(self) -> list[str]:
        cols = [*GROUP_KEYS, "runs", *(f"n_{s}" for s in STATUSES)]
        for source, _ in SOURCES:
            for m in self.metrics:
                cols += [f"{source}:{m}:mean", f"{source}:{m}:std", f"{source}:{m}:n"]
        if self.profiles:
            cols += [name for name, _, _ in PROFILE_COLUMNS]
        return cols

    def csv_rows(self) -> list[list[Any]]:
        """Raw numbers (not x100); a cell without numbers holds the status in its mean column."""
        out = []
        for row in self.rows:
            cells: list[Any] = [*row.key, row.status_text()]
            cells += [row.status_counts[s] for s in STATUSES]
            for source, _ in SOURCES:
                for m in self.metrics:
                    stat = row.cells[source, m]
                    if stat is None:
                        cells += [row.placeholder(), "", ""]
                    else:
                        cells += [repr(stat.mean), "" if stat.std is None else repr(stat.std)]
                        cells.append(stat.n)
            if self.profiles:
                profile = self.profiles.get(row.choices["upsampler"]) or {}
                cells += [_raw(profile.get(name)) for name, _, _ in PROFILE_COLUMNS]
            out.append(cells)
        return out

    def run_rows(self) -> tuple[list[str], list[list[Any]]]:
        """One row per run behind the table (header, rows): what a rerun is compared with,
        job by job (on CPU a rerun of the same config gives the same numbers)."""
        header = [*GROUP_KEYS, "seed", "status", "wall_time_s", "converged", "collapsed"]
        header += ["missed_classes"]
        header += [f"{source}:{m}" for source, _ in SOURCES for m in self.metrics]
        rows = []
        for row in self.rows:
            for run in row.runs:
                cells = [*row.key, run["seed"], run["status"], _raw(run.get("wall_time_s"))]
                finished = run["status"] == "finished"
                cells += [_raw(run.get("_converged")), is_collapsed(run) if finished else ""]
                cells += [";".join(missed_classes(run)) if finished else ""]
                cells += [
                    _raw((run.get(source) or {}).get(m))
                    for source, _ in SOURCES
                    for m in self.metrics
                ]
                rows.append(cells)
        return header, rows

    def write(self, out_dir: str | Path, stem: str = "results") -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        md, tex, csv_path = (out_dir / f"{stem}.{ext}" for ext in ("md", "tex", "csv"))
        runs_path, comparisons_path = out_dir / "runs.csv", out_dir / COMPARISONS_FILE
        md.write_text(self.to_markdown())
        tex.write_text(self.to_latex())
        for path, (header, rows) in (
            (csv_path, (self.csv_header(), self.csv_rows())),
            (runs_path, self.run_rows()),
            (comparisons_path, (CSV_HEADER, self.comparisons.csv_rows())),
        ):
            with path.open("w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(header)
                writer.writerows(rows)
        return [md, csv_path, tex, runs_path, comparisons_path]


def _raw(value: Any) -> Any:
    return "" if value is None else value


def _profile_cell(profile: Mapping[str, Any] | None, name: str, fmt) -> str:
    if profile is None:
        return "-"
    if profile.get("skipped"):
        return "skipped"
    text = fmt(profile.get(name))
    if name == "flops" and profile.get("flops_hand"):
        text += " *"
    return text


_LATEX_SPECIALS = {"_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "±": r"$\pm$"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def build_table(
    run_dirs: Iterable[str | Path], profiles: Mapping[str, dict[str, Any]] | None = None
) -> ReportTable:
    records, notes = find_records(run_dirs)
    if not records:
        raise FileNotFoundError(
            f"no {RESULTS_FILE} under {[str(d) for d in run_dirs]}: pass the run or multirun "
            "directories that train.py wrote"
        )
    metrics = metric_keys(records)
    rows = build_rows(records, metrics)
    return ReportTable(rows, metrics, dict(profiles or {}), notes, compare_rows(rows))


Cells = dict[tuple[str, ...], dict[str, tuple[Any, float]]]


def _cells(reader: csv.DictReader) -> Cells:
    cells: Cells = {}
    for line in reader:
        row = cells.setdefault(tuple(line[k] for k in GROUP_KEYS), {})
        for column, value in line.items():
            if column.endswith(":mean"):
                name = column.removesuffix(":mean")
                std = line.get(f"{name}:std") or ""
                row[name] = (_number_or_text(value), float(std) if std else 0.0)
    return cells


def read_csv_cells(path: str | Path) -> Cells:
    """``{group key: {"source:metric": (mean or status text, std)}}`` from a written CSV."""
    path = Path(path)
    if path.is_dir():
        path = path / "results.csv"
    if not path.is_file():
        raise FileNotFoundError(f"no committed table {path}: pass the --out directory of a report")
    with path.open(newline="") as f:
        return _cells(csv.DictReader(f))


def table_cells(table: ReportTable) -> Cells:
    """The mapping of :func:`read_csv_cells` for a table in memory (through the same CSV text,
    so both sides of a comparison are rounded alike)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(table.csv_header())
    writer.writerows(table.csv_rows())
    buffer.seek(0)
    return _cells(csv.DictReader(buffer))


def _number_or_text(value: str) -> float | str:
    try:
        return float(value)
    except ValueError:
        return value


def compare_cells(old: Cells, new: Cells, k: float = 2.0, eps: float = 1e-6) -> list[str]:
    """Cells whose mean moved beyond the seed spread:
    ``|mean_new - mean_old| > k * max(std_old, std_new, eps)``; a cell that is a status on one
    side and a number (or another status) on the other, or exists on one side only, differs."""
    diffs = []
    for key in sorted(set(old) | set(new)):
        name = "/".join(key)
        if key not in new or key not in old:
            diffs.append(f"{name}: row only in the {'committed' if key in old else 'new'} table")
            continue
        for cell in sorted(set(old[key]) | set(new[key])):
            if cell not in old[key] or cell not in new[key]:
                side = "committed" if cell in old[key] else "new"
                diffs.append(f"{name} {cell}: only in the {side} table")
                continue
            (mean_old, std_old), (mean_new, std_new) = old[key][cell], new[key][cell]
            if not (isinstance(mean_old, float) and isinstance(mean_new, float)):
                if mean_old != mean_new:
                    diffs.append(f"{name} {cell}: {mean_old} -> {mean_new}")
                continue
            tolerance = k * max(std_old, std_new, eps)
            if math.isnan(mean_old - mean_new) or abs(mean_new - mean_old) > tolerance:
                diffs.append(
                    f"{name} {cell}: {mean_old:.6g} ± {std_old:.2g} -> {mean_new:.6g} ± "
                    f"{std_new:.2g} (|diff| {abs(mean_new - mean_old):.3g} > {tolerance:.3g})"
                )
    return diffs
