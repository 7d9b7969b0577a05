"""Which changes to the training recipe matter: each lever's runs against the baseline's, paired
by seed and tested as the tables test upsamplers (:mod:`upbench.report.stats`).

Build::

    python -m upbench.report.levers BASELINE_DIR LEVER_DIR [LEVER_DIR ...] --out DIR

Each directory holds the finished runs of one recipe, one per seed and setting (the run's
choice of backbone, upsampler, decoder and data; e.g. the sweep of ``python train.py -m
seed=0,1,2,3,4 loss=weighted_ce hydra.sweep.dir=DIR``), and is named by its last path component.
The baseline may hold more settings than a lever, e.g. a whole table, so that a lever can be
tried on the table jobs where it matters: only the settings a lever ran are compared. For each
lever, each of its settings and each compared metric (``upbench.metrics.compared_metrics``, on
the best-validation checkpoint) the lever − baseline difference is paired by seed and tested
with the paired t-test. A lever run in several of the baseline's settings is also tested on
their mean (per seed, over the seeds that ran every one of them): its effect on the table as a
whole. Holm's correction runs over every row. Writes:

- ``comparisons.csv``: the tables' columns (:data:`upbench.report.stats.CSV_HEADER`), context
  the setting (``resnet/resize_conv/unet/synthetic``, or ``mean of 8 settings``), method_a the
  lever, method_b the baseline;
- ``levers.md``: each recipe and setting with its seeds, converged and collapsed runs, test mIoU
  (mean ± 95 % CI half-width) and the recipe keys in which it differs from the baseline
  (:func:`upbench.results.recipe_diff`), so that a lever is named by what it changed rather than
  by its directory alone; then the tests.
"""

from __future__ import annotations

import argparse
import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from rich.console import Console

from upbench.metrics import compared_metrics, non_fractions
from upbench.report.format import format_mean, format_metric
from upbench.report.stats import (
    CSV_HEADER,
    Comparison,
    ComparisonFamily,
    ci_half_width,
    holm,
    paired_difference,
)
from upbench.report.table import (
    COMPARISONS_FILE,
    GROUP_KEYS,
    TESTED_SOURCE,
    find_records,
    is_collapsed,
)
from upbench.results import recipe_diff

LEVERS_FILE = "levers.md"
# The context of a lever's test on its mean over several settings, e.g. a lever run on a whole
# column of a table: each setting's seeds may be too few to show a shift that all of them share.
ALL_SETTINGS = "mean of {n} settings"
HEADLINE = "test/mIoU"
DIGITS = (1, 3)  # decimals in % and otherwise, as in the tables


class LeverError(ValueError):
    """A directory that cannot be read as one recipe's runs."""


def setting_of(record: dict[str, Any]) -> str:
    """What a run trained besides its recipe: ``backbone/upsampler/decoder/data``."""
    return "/".join(record["choices"][key] for key in GROUP_KEYS)


@dataclass(frozen=True)
class Recipe:
    name: str
    runs: dict[str, dict[int, dict[str, Any]]]  # setting -> seed -> finished record

    def values(self, metric: str, setting: str) -> dict[int, float]:
        return {
            seed: record[TESTED_SOURCE][metric]
            for seed, record in self.runs.get(setting, {}).items()
            if (record.get(TESTED_SOURCE) or {}).get(metric) is not None
        }


def read_recipe(run_dir: str | Path) -> tuple[Recipe, list[str]]:
    """The finished runs under ``run_dir``, by setting and seed; ``(recipe, notes)``."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise LeverError(f"{run_dir}: no such directory")
    records, notes = find_records([run_dir])
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for record in records:
        if record["status"] != "finished":
            notes.append(f"{record['_path']}: {record['status']}, left out")
            continue
        seed, by_seed = record["seed"], runs.setdefault(setting_of(record), {})
        if seed in by_seed:
            raise LeverError(
                f"{run_dir}: two finished runs of seed {seed} ({by_seed[seed]['_path']} and "
                f"{record['_path']}); give each recipe its own directory"
            )
        by_seed[seed] = record
    if not runs:
        raise LeverError(f"{run_dir}: no finished run (no results.json with status finished)")
    return Recipe(run_dir.name, runs), notes


def changes_from(baseline: Recipe, lever: Recipe, setting: str) -> list[str]:
    """``key=value`` for each recipe key in which the lever's runs of ``setting`` differ from
    the baseline's runs of the same setting and seed (keys of where a run ran, such as
    ``num_threads``, are not recipe)."""
    ours, theirs = lever.runs.get(setting, {}), baseline.runs.get(setting, {})
    changed: dict[str, set[str]] = {}
    for seed in sorted(ours.keys() & theirs.keys()):
        diff = recipe_diff(theirs[seed]["config"], ours[seed]["config"])
        for key, (_, value) in diff.items():
            changed.setdefault(key, set()).add(json.dumps(value))
    return [f"{key}={'|'.join(sorted(values))}" for key, values in sorted(changed.items())]


def contexts_of(lever: Recipe, baseline: Recipe) -> dict[str, list[str]]:
    """What a lever is tested in, each with the settings it covers: each of its settings, and,
    where it ran several that the baseline ran too, their mean (:data:`ALL_SETTINGS`)."""
    contexts = {setting: [setting] for setting in sorted(lever.runs)}
    shared = sorted(lever.runs.keys() & baseline.runs.keys())
    if len(shared) > 1:
        contexts[ALL_SETTINGS.format(n=len(shared))] = shared
    return contexts


def paired_values(
    lever: Recipe, baseline: Recipe, metric: str, settings: Sequence[str]
) -> tuple[dict[int, float], dict[int, float]]:
    """``(lever, baseline)`` values of ``metric`` by seed in ``settings``: one setting's own, or,
    over several, each seed's mean over them, on the seeds where both recipes ran every one (a
    seed missing a setting would shift its mean by that setting's level, not by the lever)."""
    if len(settings) == 1:
        return lever.values(metric, settings[0]), baseline.values(metric, settings[0])
    by_setting = [
        (lever.values(metric, setting), baseline.values(metric, setting)) for setting in settings
    ]
    seeds = sorted(set.intersection(*(set(values) for pair in by_setting for values in pair)))
    ours = {seed: fmean(values[seed] for values, _ in by_setting) for seed in seeds}
    theirs = {seed: fmean(values[seed] for _, values in by_setting) for seed in seeds}
    return ours, theirs


def compare_levers(baseline: Recipe, levers: Sequence[Recipe]) -> ComparisonFamily:
    """Every lever against the baseline in each of its contexts (:func:`contexts_of`), on every
    compared metric, Holm-corrected together."""
    rows = []
    for lever in levers:
        for context, settings in contexts_of(lever, baseline).items():
            for metric in compared_metrics():
                test = paired_difference(*paired_values(lever, baseline, metric, settings))
                if test is not None:
                    rows.append(Comparison(context, metric, lever.name, baseline.name, test))
    return ComparisonFamily(holm(rows), {})


def _mean_text(values: Sequence[float], metric: str) -> str:
    if not values:
        return "-"
    return format_mean(
        sum(values) / len(values), ci_half_width(values), metric not in non_fractions(), DIGITS
    )


def _signed(value: float, metric: str) -> str:
    text = format_metric(value, metric not in non_fractions(), DIGITS)
    return f"+{text}" if value > 0 else text


def _p_text(p: float) -> str:
    return "< 0.001" if p < 1e-3 else f"{p:.2g}"


def _converged_text(runs: dict[int, dict[str, Any]]) -> str:
    flags = [r["_converged"] for r in runs.values() if r.get("_converged") is not None]
    return f"{sum(flags)}/{len(flags)}" if flags else "-"


def levers_markdown(baseline: Recipe, levers: Sequence[Recipe], family: ComparisonFamily) -> str:
    headline = f"{HEADLINE.removeprefix('test/')}{'' if HEADLINE in non_fractions() else ' (%)'}"
    lines = [
        f"# Levers against `{baseline.name}`",
        "",
        "Best-validation checkpoint; mean ± 95 % CI half-width over seeds. Each lever − "
        f"`{baseline.name}` is paired by seed (two-sided paired t-test), Holm-corrected over the "
        f"{len(family.rows)} tests below; significant at α = 0.05 after the correction. "
        'A lever run in several settings is also tested on its mean over them ("mean of n '
        'settings": per seed, on the seeds that ran every one).',
        "",
        f"| recipe | setting | change from `{baseline.name}` | seeds | converged | collapsed "
        f"| {headline} |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    # The baseline only in the settings that a lever ran: a table baseline holds many more.
    settings = sorted({setting for lever in levers for setting in lever.runs})
    for recipe in (baseline, *levers):
        for setting in settings if recipe is baseline else sorted(recipe.runs):
            if recipe is baseline:
                change = "(baseline)"
            else:
                changes = changes_from(baseline, recipe, setting)
                change = ", ".join(f"`{c}`" for c in changes) or "same recipe"
            runs = recipe.runs.get(setting, {})
            collapsed = sum(is_collapsed(r) for r in runs.values())
            seeds = ", ".join(str(s) for s in sorted(runs)) or "-"
            mean = _mean_text(list(recipe.values(HEADLINE, setting).values()), HEADLINE)
            lines.append(
                f"| {recipe.name} | {setting} | {change} | {seeds} | {_converged_text(runs)} "
                f"| {collapsed} | {mean} |"
            )
    lines += [
        "",
        f"| metric | recipe | setting | mean | − {baseline.name} (95 % CI) | pairs | p "
        "| p (Holm) | significant |",
        "|---|---|---|---:|---:|---:|---:|---:|---|",
    ]
    by_name = {lever.name: lever for lever in levers}
    for c in family.rows:
        t = c.test
        lever = by_name[c.method_a]
        settings = contexts_of(lever, baseline)[c.context]
        values, _ = paired_values(lever, baseline, c.metric, settings)
        mean = _mean_text(list(values.values()), c.metric)
        interval = f"{_signed(t.ci_low, c.metric)} to {_signed(t.ci_high, c.metric)}"
        lines.append(
            f"| {c.metric.removeprefix('test/')} | {c.method_a} | {c.context} | {mean} "
            f"| {_signed(t.mean_diff, c.metric)} ({interval}) | {t.n_pairs} "
            f"| {_p_text(t.p_value)} | {_p_text(c.p_adjusted)} "
            f"| {'yes' if c.significant else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def write_levers(
    baseline: Recipe, levers: Sequence[Recipe], out_dir: str | Path
) -> tuple[str, list[Path]]:
    """Write ``comparisons.csv`` and ``levers.md`` to ``out_dir``; ``(markdown, paths)``."""
    family = compare_levers(baseline, levers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / COMPARISONS_FILE
    with csv_path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_HEADER)
        writer.writerows(family.csv_rows())
    markdown = levers_markdown(baseline, levers, family)
    md_path = out / LEVERS_FILE
    md_path.write_text(markdown)
    return markdown, [csv_path, md_path]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m upbench.report.levers",
        description="Paired, Holm-corrected tests of recipe levers against a baseline recipe.",
    )
    parser.add_argument("baseline", type=Path, help="the baseline recipe's run directory")
    parser.add_argument("levers", nargs="+", type=Path, help="one run directory per lever")
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    console = Console(soft_wrap=True)
    notes: list[str] = []
    try:
        baseline, found = read_recipe(args.baseline)
        notes += found
        levers = []
        for run_dir in args.levers:
            lever, found = read_recipe(run_dir)
            notes += found
            levers.append(lever)
    except LeverError as error:
        console.print(f"[red]error:[/] {error}", highlight=False)
        return 2
    names = [recipe.name for recipe in (baseline, *levers)]
    if len(set(names)) < len(names):
        console.print(f"[red]error:[/] two run directories share a name: {names}", highlight=False)
        return 2
    notes += [
        f"{lever.name}: no {baseline.name} run of {setting}, not compared"
        for lever in levers
        for setting in sorted(lever.runs.keys() - baseline.runs.keys())
    ]
    markdown, written = write_levers(baseline, levers, args.out)
    console.print(markdown, markup=False)
    for note in notes:
        console.print(f"note: {note}", markup=False)
    for path in written:
        console.print(f"wrote {path}", markup=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
