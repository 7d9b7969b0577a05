"""Which differences between upsamplers are real: paired tests over seeds, Holm-corrected.

Runs of a table that share a seed share their data, data order and backbone initialisation (see
``tests/test_pairing.py``), so the difference between two methods is measured seed by seed, which
removes the seed-to-seed variation both methods share. For every (metric, method A, method B) of
:func:`comparisons` the report writes to ``comparisons.csv``:

- ``mean_diff``: the mean over seeds of A − B (paired by seed), with its 95 % t confidence interval;
- ``p_value``: the two-sided paired t-test (``scipy.stats.ttest_rel``). With 5 pairs Wilcoxon's
  signed-rank test cannot go below p = 1/16 = 0.0625, so it could never reject at 0.05 after
  any correction; the t-test can, at the price of assuming roughly normal per-seed differences;
- ``p_adjusted``: Holm's step-down correction (``statsmodels``) over every row of the table's
  family (all its metrics and pairs at once), which controls the family-wise error rate;
- ``significant``: ``p_adjusted < 0.05``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests

ALPHA = 0.05
CONFIDENCE = 0.95


def ci_half_width(values: Sequence[float], confidence: float = CONFIDENCE) -> float | None:
    """Half-width of the t confidence interval of the mean of ``values`` (``None`` when n < 2)."""
    n = len(values)
    if n < 2:
        return None
    sem = float(np.std(values, ddof=1)) / math.sqrt(n)
    return float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * sem


@dataclass(frozen=True)
class PairedDifference:
    """A − B over the seeds both finished."""

    n_pairs: int
    mean_diff: float
    ci_low: float
    ci_high: float
    p_value: float


def paired_difference(
    a: Mapping[int, float], b: Mapping[int, float], confidence: float = CONFIDENCE
) -> PairedDifference | None:
    """Paired t-test of ``a`` against ``b`` (``{seed: value}``) over their common seeds; ``None``
    with fewer than 2 pairs. Identical differences on every seed (zero spread, where the t
    statistic is undefined) are certain: p = 0 for a non-zero difference, 1 for none (equal to
    1e-12, float rounding of the subtraction)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return None
    x = np.array([a[s] for s in seeds], dtype=float)
    y = np.array([b[s] for s in seeds], dtype=float)
    diff = x - y
    mean = float(diff.mean())
    if np.allclose(diff, diff[0], rtol=0.0, atol=1e-12):
        return PairedDifference(len(seeds), mean, mean, mean, 0.0 if mean != 0 else 1.0)
    result = stats.ttest_rel(x, y)
    interval = result.confidence_interval(confidence)
    return PairedDifference(
        len(seeds), mean, float(interval.low), float(interval.high), float(result.pvalue)
    )


@dataclass(frozen=True)
class Comparison:
    context: str  # what is fixed in the comparison, e.g. "resnet/unet/synthetic"
    metric: str
    method_a: str
    method_b: str
    test: PairedDifference
    p_adjusted: float = math.nan

    @property
    def significant(self) -> bool:
        return self.p_adjusted < ALPHA


CSV_HEADER = (
    "context",
    "metric",
    "method_a",
    "method_b",
    "n_pairs",
    "mean_diff",
    "ci_low",
    "ci_high",
    "p_value",
    "p_adjusted",
    "significant",
)


def holm_adjusted(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (``statsmodels``)."""
    if not p_values:
        return []
    return [float(p) for p in multipletests(p_values, method="holm")[1]]


def holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """The same comparisons with Holm-adjusted p-values over the whole family."""
    adjusted = holm_adjusted([c.test.p_value for c in comparisons])
    return [
        Comparison(c.context, c.metric, c.method_a, c.method_b, c.test, p)
        for c, p in zip(comparisons, adjusted, strict=True)
    ]


@dataclass
class ComparisonFamily:
    """Every comparison of a table, Holm-adjusted together, and the best method of each
    (context, metric) that the others were compared with."""

    rows: list[Comparison]
    best: dict[tuple[str, str], str]

    def tied_with_best(self, context: str, metric: str) -> set[str]:
        """The methods of ``context`` not significantly worse than the best on ``metric``: the
        best itself and every method whose comparison with it is not significant."""
        best = self.best.get((context, metric))
        if best is None:
            return set()
        return {best} | {
            c.method_a
            for c in self.rows
            if (c.context, c.metric, c.method_b) == (context, metric, best) and not c.significant
        }

    def csv_rows(self) -> list[list[object]]:
        return [
            [
                c.context,
                c.metric,
                c.method_a,
                c.method_b,
                c.test.n_pairs,
                repr(c.test.mean_diff),
                repr(c.test.ci_low),
                repr(c.test.ci_high),
                repr(c.test.p_value),
                repr(c.p_adjusted),
                str(c.significant).lower(),
            ]
            for c in self.rows
        ]


def comparisons(
    values: Mapping[str, Mapping[str, Mapping[str, Mapping[int, float]]]],
    reference: str,
    lower_is_better: Collection[str] = (),
) -> ComparisonFamily:
    """Every method against ``reference`` and against the best method, per context and metric.

    Args:
        values: ``{context: {metric: {method: {seed: value}}}}``.
        reference: the baseline method (``bilinear``), compared with when present.
        lower_is_better: metrics whose best method has the lowest mean (e.g. the checkerboard
            score); for the others the highest mean is best.

    The best is chosen per (context, metric) by its mean over seeds. Rows are "method vs
    reference" (method_b = reference) and "method vs best" (method_b = best); the reference's own
    comparison with the best is the row (reference, best). Holm's correction runs over all rows.
    """
    rows, best_of = [], {}
    for context, by_metric in values.items():
        for metric, by_method in by_metric.items():
            methods = sorted(m for m, seeds in by_method.items() if seeds)
            if not methods:
                continue
            means = {m: float(np.mean(list(by_method[m].values()))) for m in methods}
            best = (min if metric in lower_is_better else max)(methods, key=means.__getitem__)
            best_of[context, metric] = best
            # (best, reference) would repeat (reference, best) with the sign flipped.
            vs_reference = reference in by_method
            pairs = [(m, reference) for m in methods if vs_reference and m not in (reference, best)]
            pairs += [(m, best) for m in methods if m != best and (m, best) not in pairs]
            for method_a, method_b in pairs:
                test = paired_difference(by_method[method_a], by_method[method_b])
                if test is not None:
                    rows.append(Comparison(context, metric, method_a, method_b, test))
    return ComparisonFamily(holm(rows), best_of)


@dataclass(frozen=True)
class SettingEffect:
    """Whether per-seed values differ between settings (a one-way repeated-measures ANOVA)."""

    n_seeds: int
    n_settings: int
    f_value: float
    df_num: float
    df_den: float
    epsilon: float  # Greenhouse–Geisser's; p_value is read from F(epsilon·df_num, epsilon·df_den)
    p_value: float


def greenhouse_geisser_epsilon(grid: np.ndarray) -> float:
    """Greenhouse and Geisser's (1959) estimate of Box's (1954) epsilon for a ``(subjects,
    settings)`` grid: how far the covariance of the settings departs from sphericity, from
    1/(settings − 1) (worst) to 1 (spherical). Multiplying both degrees of freedom of the
    repeated-measures F by it keeps the test's false-positive rate near its nominal level when
    the settings' differences vary unequally (statsmodels' ``AnovaRM`` does not correct).

    Epsilon is tr(D)² / ((k − 1)·tr(D²)) for the double-centred sample covariance D of the k
    settings (the covariance of any orthonormal contrasts has the same non-zero eigenvalues)."""
    k = grid.shape[1]
    centring = np.eye(k) - 1.0 / k
    double_centred = centring @ np.cov(grid, rowvar=False) @ centring
    return float(np.trace(double_centred) ** 2 / ((k - 1) * np.sum(double_centred**2)))


def setting_effect(values: Mapping[str, Mapping[int, float]]) -> SettingEffect | None:
    """Do the settings of ``values`` (``{setting: {seed: value}}``) differ in mean? One-way
    repeated-measures ANOVA (``statsmodels`` ``AnovaRM``), seeds as subjects, over the seeds
    present in every setting; ``None`` with fewer than 2 settings or 2 such seeds.

    Applied to a recipe lever's per-seed shifts (lever − baseline) in each upsampler, it asks
    whether the lever moves the upsamplers by different amounts, which is what would change the
    comparisons between them. The p-value is Greenhouse–Geisser-corrected
    (:func:`greenhouse_geisser_epsilon`), so unequal variances of the differences between
    settings do not inflate it; with 2 settings epsilon is 1 and the test is the paired t-test
    (F = t²). Values that differ between settings by the same amount on every seed (no residual,
    F undefined, nothing to correct) are certain: p = 0 for unequal means, 1 for equal ones."""
    import pandas as pd  # statsmodels' own dependency, needed only here
    from statsmodels.stats.anova import AnovaRM

    settings = sorted(values)
    seeds = sorted(set.intersection(*(set(values[s]) for s in settings))) if settings else []
    if len(settings) < 2 or len(seeds) < 2:
        return None
    grid = np.array([[values[k][s] for k in settings] for s in seeds], dtype=float)
    df_num, df_den = len(settings) - 1, (len(settings) - 1) * (len(seeds) - 1)
    residual = grid - grid.mean(axis=1, keepdims=True) - grid.mean(axis=0) + grid.mean()
    if np.allclose(residual, 0.0, rtol=0.0, atol=1e-12):
        equal = np.allclose(grid.mean(axis=0), grid.mean(), rtol=0.0, atol=1e-12)
        return SettingEffect(
            len(seeds), len(settings), 0.0 if equal else math.inf, df_num, df_den, 1.0,
            1.0 if equal else 0.0,
        )  # fmt: skip
    frame = pd.DataFrame(
        [(s, k, grid[i, j]) for i, s in enumerate(seeds) for j, k in enumerate(settings)],
        columns=["seed", "setting", "value"],
    )
    row = AnovaRM(frame, "value", "seed", within=["setting"]).fit().anova_table.iloc[0]
    f_value, epsilon = float(row["F Value"]), greenhouse_geisser_epsilon(grid)
    p_value = float(stats.f.sf(f_value, epsilon * df_num, epsilon * df_den))
    return SettingEffect(len(seeds), len(settings), f_value, df_num, df_den, epsilon, p_value)
