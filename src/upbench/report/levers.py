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
whole; and, where they span several backbones, on each backbone's mean: its effect on a column.
Holm's correction runs over every row. Writes:

- ``comparisons.csv``: the tables' columns (:data:`upbench.report.stats.CSV_HEADER`), context
  the setting (``resnet/resize_conv/unet/synthetic``, ``mean of 8 settings``, or ``resnet: mean
  of 10 settings``), method_a the lever, method_b the baseline;
- ``shift_by_setting.csv``: for a lever run in several settings, whether its shift differs
  between them (:func:`upbench.report.stats.setting_effect` on the per-seed lever − baseline
  differences), per metric, Holm-corrected over this file's rows. A lever that moves every
  upsampler alike leaves a table's comparisons as they were; one that does not changes them;
- ``levers.md``: each recipe and setting with its seeds, converged and collapsed runs, test mIoU
  (mean ± 95 % CI half-width) and the recipe keys in which it differs from the baseline
  (:func:`upbench.results.recipe_diff`), so that a lever is named by what it changed rather than
  by its directory alone; then the tests of both files.

A lever's runs may lie in several directories (runs of one recipe added in several sweeps):
``NAME=DIR,DIR`` reads them as one recipe called ``NAME``. The baseline takes the same form,
e.g. to name it by what it is where its directory is named after a table that has moved on.
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
    ALPHA,
    CSV_HEADER,
    Comparison,
    ComparisonFamily,
    SettingEffect,
    ci_half_width,
    holm,
    holm_adjusted,
    paired_difference,
    setting_effect,
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
SHIFTS_FILE = "shift_by_setting.csv"
SHIFTS_HEADER = (
    "lever", "baseline", "context", "metric", "n_seeds", "n_settings", "f_value", "df_num",
    "df_den", "epsilon", "p_value", "p_adjusted", "significant",
)  # fmt: skip
# The context of a lever's test on its mean over several settings, e.g. a lever run on a whole
# column of a table: each setting's seeds may be too few to show a shift that all of them share.
ALL_SETTINGS = "mean of {n} settings"
# A lever run on several backbones (a whole table of upsamplers x backbones) is also tested on
# each backbone's mean: a shift on one backbone is diluted in the mean over all of them.
BACKBONE_SETTINGS = "{backbone}: mean of {n} settings"
HEADLINE = "test/mIoU"
DIGITS = (1, 3)  # decimals in % and otherwise, as in the tables


class LeverError(ValueError):
    """A directory that cannot be read as one recipe's runs."""


def setting_of(record: dict[str, Any]) -> str:
    """What a run trained besides its recipe: ``backbone/upsampler/decoder/data``."""
    return "/".join(record["choices"][key] for key in GROUP_KEYS)


def choice_in(setting: str, group: str) -> str:
    """The choice of one config group (one of ``GROUP_KEYS``) in a :func:`setting_of` string."""
    return setting.split("/")[GROUP_KEYS.index(group)]


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


def read_recipe(
    run_dirs: str | Path | Sequence[str | Path], name: str | None = None
) -> tuple[Recipe, list[str]]:
    """The finished runs under ``run_dirs`` (one directory or several), by setting and seed,
    named ``name`` or after the first directory; ``(recipe, notes)``."""
    dirs = [Path(d) for d in ([run_dirs] if isinstance(run_dirs, str | Path) else run_dirs)]
    for run_dir in dirs:
        if not run_dir.is_dir():
            raise LeverError(f"{run_dir}: no such directory")
    where = ", ".join(map(str, dirs))
    records, notes = find_records(dirs)
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for record in records:
        if record["status"] != "finished":
            notes.append(f"{record['_path']}: {record['status']}, left out")
            continue
        seed, by_seed = record["seed"], runs.setdefault(setting_of(record), {})
        if seed in by_seed:
            raise LeverError(
                f"{where}: two finished runs of seed {seed} ({by_seed[seed]['_path']} and "
                f"{record['_path']}); give each recipe its own directory"
            )
        by_seed[seed] = record
    if not runs:
        raise LeverError(f"{where}: no finished run (no results.json with status finished)")
    return Recipe(name or dirs[0].name, runs), notes


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
    """What a lever is tested in, each with the settings it covers: each of its settings;
    where those that the baseline ran too span several backbones, each backbone's mean over
    its settings (:data:`BACKBONE_SETTINGS`, for a backbone with several); and, where there are
    several, their mean (:data:`ALL_SETTINGS`)."""
    contexts = {setting: [setting] for setting in sorted(lever.runs)}
    shared = sorted(lever.runs.keys() & baseline.runs.keys())
    by_backbone: dict[str, list[str]] = {}
    for setting in shared:
        by_backbone.setdefault(choice_in(setting, "backbone"), []).append(setting)
    if len(by_backbone) > 1:
        for backbone, settings in sorted(by_backbone.items()):
            if len(settings) > 1:
                contexts[BACKBONE_SETTINGS.format(backbone=backbone, n=len(settings))] = settings
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


@dataclass(frozen=True)
class ShiftTest:
    """Whether a lever's shift differs between the settings of ``context``."""

    lever: str
    context: str
    metric: str
    effect: SettingEffect
    p_adjusted: float

    @property
    def significant(self) -> bool:
        return self.p_adjusted < ALPHA


def compare_shifts(baseline: Recipe, levers: Sequence[Recipe]) -> list[ShiftTest]:
    """For every lever run in several of the baseline's settings and every compared metric:
    do its per-seed shifts differ between those settings? Holm-corrected together."""
    found = []
    for lever in levers:
        for context, settings in contexts_of(lever, baseline).items():
            if len(settings) < 2:
                continue
            for metric in compared_metrics():
                shifts = {}
                for setting in settings:
                    ours, theirs = lever.values(metric, setting), baseline.values(metric, setting)
                    shifts[setting] = {s: ours[s] - theirs[s] for s in ours.keys() & theirs.keys()}
                effect = setting_effect(shifts)
                if effect is not None:
                    found.append((lever.name, context, metric, effect))
    adjusted = holm_adjusted([effect.p_value for *_, effect in found])
    return [ShiftTest(*f, p) for f, p in zip(found, adjusted, strict=True)]


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


def levers_markdown(
    baseline: Recipe,
    levers: Sequence[Recipe],
    family: ComparisonFamily,
    shifts: Sequence[ShiftTest] = (),
) -> str:
    headline = f"{HEADLINE.removeprefix('test/')}{'' if HEADLINE in non_fractions() else ' (%)'}"
    lines = [
        f"# Levers against `{baseline.name}`",
        "",
        "Best-validation checkpoint; mean ± 95 % CI half-width over seeds. Each lever − "
        f"`{baseline.name}` is paired by seed (two-sided paired t-test), Holm-corrected over the "
        f"{len(family.rows)} tests below; significant at α = 0.05 after the correction. "
        'A lever run in several settings is also tested on its mean over them ("mean of n '
        'settings": per seed, on the seeds that ran every one), and, over several backbones, '
        'on each backbone\'s ("backbone: mean of n settings").',
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
    if shifts:
        lines += [
            "",
            "Does a lever move the settings it ran by different amounts (which would change the "
            "comparisons between them)? One-way repeated-measures ANOVA of the per-seed shifts "
            "(lever − baseline), seeds as subjects, on the seeds that ran every setting; p "
            "Greenhouse–Geisser-corrected (ε: 1 for spherical data, down to 1/(settings − 1)); "
            f"Holm over these {len(shifts)} tests.",
            "",
            "| metric | recipe | settings | seeds | F (df) | ε | p | p (Holm) | shift differs |",
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for t in shifts:
            e = t.effect
            lines.append(
                f"| {t.metric.removeprefix('test/')} | {t.lever} | {t.context} | {e.n_seeds} "
                f"| {e.f_value:.2f} ({e.df_num:g}, {e.df_den:g}) | {e.epsilon:.2f} "
                f"| {_p_text(e.p_value)} "
                f"| {_p_text(t.p_adjusted)} | {'yes' if t.significant else 'no'} |"
            )
    return "\n".join(lines) + "\n"


def write_levers(
    baseline: Recipe, levers: Sequence[Recipe], out_dir: str | Path
) -> tuple[str, list[Path]]:
    """Write ``comparisons.csv``, ``shift_by_setting.csv`` and ``levers.md`` to ``out_dir``;
    ``(markdown, paths)``."""
    family = compare_levers(baseline, levers)
    shifts = compare_shifts(baseline, levers)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv_path = out / COMPARISONS_FILE
    with csv_path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(CSV_HEADER)
        writer.writerows(family.csv_rows())
    shifts_path = out / SHIFTS_FILE
    with shifts_path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(SHIFTS_HEADER)
        for t in shifts:
            e = t.effect
            writer.writerow([
                t.lever, baseline.name, t.context, t.metric, e.n_seeds, e.n_settings,
                repr(e.f_value), repr(e.df_num), repr(e.df_den), repr(e.epsilon), repr(e.p_value),
                repr(t.p_adjusted), str(t.significant).lower(),
            ])  # fmt: skip
    markdown = levers_markdown(baseline, levers, family, shifts)
    md_path = out / LEVERS_FILE
    md_path.write_text(markdown)
    return markdown, [csv_path, shifts_path, md_path]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m upbench.report.levers",
        description="Paired, Holm-corrected tests of recipe levers against a baseline recipe.",
    )
    parser.add_argument(
        "baseline",
        help="the baseline recipe's run directory, or NAME=DIR,DIR (as for a lever)",
    )
    parser.add_argument(
        "levers",
        nargs="+",
        help="one run directory per lever, named after it, or NAME=DIR,DIR for a lever named "
        "NAME whose runs lie in one or several directories",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    console = Console(soft_wrap=True)
    notes: list[str] = []
    try:
        recipes = []
        for argument in (args.baseline, *args.levers):
            name, _, dirs = argument.rpartition("=")
            recipe, found = read_recipe(dirs.split(","), name or None)
            notes += found
            recipes.append(recipe)
        baseline, *levers = recipes
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
