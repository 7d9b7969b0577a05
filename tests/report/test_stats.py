"""The statistics of the report on planted results: what is the same must not come out
significant, a consistent gap must, and the numbers must be those of the textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import linalg, stats

from upbench.report.stats import (
    ALPHA,
    ci_half_width,
    comparisons,
    paired_difference,
    setting_effect,
)

SEEDS = range(5)
# t(0.975, df=4), from a printed t table: the 95 % two-sided critical value with 5 pairs.
T_975_DF4 = 2.7764


def seed_effects(rng: np.random.Generator, spread: float) -> dict[int, float]:
    """What every method shares on a seed (its data and initialisation), spread ~ ``spread``."""
    return {s: float(rng.normal(0.6, spread)) for s in SEEDS}


def test_ci_half_width_is_t_times_the_standard_error():
    values = [0.50, 0.52, 0.47, 0.55, 0.51]
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    assert ci_half_width(values) == pytest.approx(T_975_DF4 * std / math.sqrt(n), rel=1e-3)
    assert ci_half_width([0.5]) is None


def test_paired_difference_matches_the_hand_computed_t_test():
    a = {0: 0.61, 1: 0.58, 2: 0.66, 3: 0.60, 4: 0.63}
    b = {0: 0.60, 1: 0.55, 2: 0.64, 3: 0.60, 4: 0.60, 9: 0.99}  # seed 9 has no partner
    diffs = [a[s] - b[s] for s in SEEDS]
    mean = sum(diffs) / 5
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / 4)
    se = sd / math.sqrt(5)
    result = paired_difference(a, b)
    assert result.n_pairs == 5
    assert result.mean_diff == pytest.approx(mean)
    assert result.ci_low == pytest.approx(mean - T_975_DF4 * se, abs=1e-6)
    assert result.ci_high == pytest.approx(mean + T_975_DF4 * se, abs=1e-6)
    # t = mean / se = 0.018 / 0.005831 = 3.087 with 4 degrees of freedom: two-sided p = 0.0366.
    assert mean / se == pytest.approx(3.087, abs=1e-3)
    assert result.p_value == pytest.approx(0.0366, abs=5e-4)


def test_paired_difference_needs_two_pairs_and_handles_zero_spread():
    assert paired_difference({0: 1.0}, {0: 0.5}) is None
    same_gap = paired_difference({0: 0.7, 1: 0.8}, {0: 0.6, 1: 0.7})
    assert same_gap.p_value == 0.0 and same_gap.mean_diff == pytest.approx(0.1)
    identical = paired_difference({0: 0.7, 1: 0.8}, {0: 0.7, 1: 0.8})
    assert identical.p_value == 1.0 and identical.mean_diff == 0.0


def planted_table(
    rng: np.random.Generator, gaps: dict[str, float], seed_spread: float, noise: float
):
    """``{context: {metric: {method: {seed: value}}}}``: method m scores the seed's shared
    effect + gaps[m] + independent noise ~ ``noise``."""
    shared = seed_effects(rng, seed_spread)
    by_method = {
        method: {s: shared[s] + gap + float(rng.normal(0, noise)) for s in SEEDS}
        for method, gap in gaps.items()
    }
    return {"resnet/unet/synthetic": {"test/mIoU": by_method}}


def test_two_identical_methods_are_not_significantly_different():
    """Two methods drawn from the same distribution: the paired test calls them different at
    about the nominal rate over many planted tables, and the table's family does not."""
    rng = np.random.default_rng(0)
    trials = 400
    false_positives = 0
    for _ in range(trials):
        by_method = planted_table(rng, {"bilinear": 0.0, "nearest": 0.0}, 0.05, 0.01)
        pair = by_method["resnet/unet/synthetic"]["test/mIoU"]
        false_positives += paired_difference(pair["nearest"], pair["bilinear"]).p_value < ALPHA
    assert false_positives / trials <= ALPHA + 0.03  # binomial slack: 400 trials at 5 %
    # A planted table (statsmodels' Holm runs a gc.collect per call, so it is built once): the
    # two are tied, whichever happens to have the higher mean.
    family = comparisons(
        planted_table(np.random.default_rng(0), {"bilinear": 0.0, "nearest": 0.0}, 0.05, 0.01),
        reference="bilinear",
    )
    (row,) = family.rows
    assert not row.significant and row.test.ci_low < 0 < row.test.ci_high
    context = "resnet/unet/synthetic"
    assert family.tied_with_best(context, "test/mIoU") == {"bilinear", "nearest"}


def test_a_consistent_gap_is_significant_even_when_seeds_spread_more():
    """+2 points on every seed, while the seeds themselves spread by 5 points: unpaired, the gap
    is lost in the spread; paired by seed, it is certain."""
    rng = np.random.default_rng(1)
    values = planted_table(
        rng, {"bilinear": 0.0, "carafe": 0.02, "nearest": 0.0}, seed_spread=0.05, noise=0.002
    )
    by_method = values["resnet/unet/synthetic"]["test/mIoU"]
    spread = np.std(list(by_method["bilinear"].values()), ddof=1)
    assert spread > 0.02  # the seed spread is larger than the gap
    family = comparisons(values, reference="bilinear")
    # carafe is the best, so the reference's row is (bilinear, carafe): bilinear - carafe.
    row = next(r for r in family.rows if (r.method_a, r.method_b) == ("bilinear", "carafe"))
    assert row.significant
    assert row.test.ci_high < 0
    assert row.test.mean_diff == pytest.approx(-0.02, abs=0.003)
    # The best is carafe; nearest is significantly worse than it, bilinear too.
    assert family.best["resnet/unet/synthetic", "test/mIoU"] == "carafe"
    assert family.tied_with_best("resnet/unet/synthetic", "test/mIoU") == {"carafe"}
    # An independent-samples test on the same numbers finds nothing, which is why pairing matters.
    from scipy import stats

    unpaired = stats.ttest_ind(
        list(by_method["carafe"].values()), list(by_method["bilinear"].values())
    )
    assert unpaired.pvalue > 0.3


def test_holm_correction_over_the_family():
    """p-values adjusted by Holm: the k-th smallest is multiplied by (m - k + 1), made
    monotone, capped at 1 (Holm 1979), computed here by hand from the raw p-values."""
    rng = np.random.default_rng(2)
    gaps = {"bilinear": 0.0, "a": 0.01, "b": 0.004, "c": -0.003, "d": 0.0}
    family = comparisons(planted_table(rng, gaps, 0.03, 0.004), reference="bilinear")
    raw = [r.test.p_value for r in family.rows]
    m = len(raw)
    order = np.argsort(raw)
    expected = np.empty(m)
    running = 0.0
    for k, i in enumerate(order):
        running = max(running, min(1.0, (m - k) * raw[i]))
        expected[i] = running
    assert [r.p_adjusted for r in family.rows] == pytest.approx(list(expected))
    assert all(r.p_adjusted >= r.test.p_value for r in family.rows)


def test_every_method_is_compared_with_the_reference_and_the_best_once():
    rng = np.random.default_rng(3)
    gaps = {"bilinear": 0.0, "carafe": 0.03, "nearest": -0.01, "dysample": 0.01}
    family = comparisons(planted_table(rng, gaps, 0.02, 0.002), reference="bilinear")
    pairs = [(r.method_a, r.method_b) for r in family.rows]
    assert sorted(pairs) == sorted(
        [
            ("dysample", "bilinear"),
            ("nearest", "bilinear"),
            ("bilinear", "carafe"),  # the reference against the best, once
            ("dysample", "carafe"),
            ("nearest", "carafe"),
        ]
    )
    nearest = next(r for r in family.rows if r.method_a == "nearest" and r.method_b == "bilinear")
    assert nearest.test.mean_diff < 0 and nearest.test.n_pairs == 5


def test_lower_is_better_metrics_pick_the_lowest_mean_as_best():
    rng = np.random.default_rng(4)
    values = planted_table(rng, {"bilinear": 0.0, "transposed": 1.5, "nearest": 0.01}, 0.05, 0.01)
    table = values["resnet/unet/synthetic"]
    values["resnet/unet/synthetic"] = {"test/checkerboard": table["test/mIoU"], **table}
    family = comparisons(values, reference="bilinear", lower_is_better={"test/checkerboard"})
    context = "resnet/unet/synthetic"
    assert family.best[context, "test/mIoU"] == "transposed"
    assert family.best[context, "test/checkerboard"] in {"bilinear", "nearest"}
    tied = family.tied_with_best(context, "test/checkerboard")
    assert "transposed" not in tied and tied <= {"bilinear", "nearest"}


def hand_anova(values: dict[str, dict[int, float]]) -> tuple[float, int, int]:
    """One-way repeated-measures ANOVA written out from its sums of squares: ``(F, df_num,
    df_den)`` over the seeds in every setting."""
    settings = sorted(values)
    seeds = sorted(set.intersection(*(set(v) for v in values.values())))
    k, n = len(settings), len(seeds)
    grand = sum(values[t][s] for t in settings for s in seeds) / (k * n)
    setting_mean = {t: sum(values[t][s] for s in seeds) / n for t in settings}
    seed_mean = {s: sum(values[t][s] for t in settings) / k for s in seeds}
    ss_setting = n * sum((setting_mean[t] - grand) ** 2 for t in settings)
    ss_error = 0.0
    for t in settings:
        for s in seeds:
            ss_error += (values[t][s] - setting_mean[t] - seed_mean[s] + grand) ** 2
    df_num, df_den = k - 1, (k - 1) * (n - 1)
    return (ss_setting / df_num) / (ss_error / df_den), df_num, df_den


def hand_epsilon(values: dict[str, dict[int, float]]) -> float:
    """Box's epsilon from its definition: the sample covariance S of the settings (written out
    as sums), projected on orthonormal contrasts C (Helmert's), M = C S Cᵀ, then
    tr(M)² / ((k − 1)·tr(M²))."""
    settings = sorted(values)
    seeds = sorted(set.intersection(*(set(v) for v in values.values())))
    k, n = len(settings), len(seeds)
    means = [sum(values[t][s] for s in seeds) / n for t in settings]
    covariance = np.array([
        [
            sum((values[a][s] - means[i]) * (values[b][s] - means[j]) for s in seeds) / (n - 1)
            for j, b in enumerate(settings)
        ]
        for i, a in enumerate(settings)
    ])  # fmt: skip
    contrasts = linalg.helmert(k)  # (k - 1, k), orthonormal rows orthogonal to the ones vector
    projected = contrasts @ covariance @ contrasts.T
    return np.trace(projected) ** 2 / ((k - 1) * np.trace(projected @ projected))


def test_setting_effect_matches_the_sums_of_squares():
    values = {
        "bilinear": {0: 0.10, 1: -0.20, 2: 0.05, 3: 0.30, 4: 0.00, 7: 5.0},  # 7: not everywhere
        "carafe": {0: 0.40, 1: 0.10, 2: 0.20, 3: 0.50, 4: 0.35},
        "nearest": {0: -0.10, 1: 0.00, 2: 0.15, 3: 0.10, 4: -0.30},
    }
    shared_seeds = {k: {s: v[s] for s in range(5)} for k, v in values.items()}
    f_value, df_num, df_den = hand_anova(shared_seeds)
    epsilon = hand_epsilon(shared_seeds)
    effect = setting_effect(values)
    assert (effect.n_seeds, effect.n_settings) == (5, 3)
    assert (effect.df_num, effect.df_den) == (df_num, df_den) == (2, 8)
    assert effect.f_value == pytest.approx(f_value, rel=1e-9)
    assert 0.5 <= epsilon < 0.99  # between its bound 1/(k - 1) and sphericity: a real correction
    assert effect.epsilon == pytest.approx(epsilon, rel=1e-9)
    corrected = stats.f.sf(f_value, epsilon * df_num, epsilon * df_den)
    assert effect.p_value == pytest.approx(corrected, rel=1e-9)
    assert effect.p_value > stats.f.sf(f_value, df_num, df_den)


def test_greenhouse_geisser_keeps_the_false_positive_rate_when_sphericity_fails():
    """Ten settings, five seeds (a table's shape) and no setting effect, but one setting's shift
    varies ten times as much as the others': the uncorrected F rejects far above 5 %, the
    corrected p-value at about the nominal rate."""
    rng = np.random.default_rng(4)
    trials = 400
    noise = [0.002] * 9 + [0.02]
    effects = [
        setting_effect({
            f"setting {j}": {s: float(rng.normal(0.0, sd)) for s in range(5)}
            for j, sd in enumerate(noise)
        })
        for _ in range(trials)
    ]  # fmt: skip
    uncorrected = sum(stats.f.sf(e.f_value, e.df_num, e.df_den) < ALPHA for e in effects)
    corrected = sum(e.p_value < ALPHA for e in effects)
    assert uncorrected / trials > 2 * ALPHA
    assert corrected / trials <= ALPHA + 0.03  # binomial slack: 400 trials at 5 %
    assert all(1 / 9 - 1e-12 <= e.epsilon <= 1 + 1e-12 for e in effects)


def test_setting_effect_of_two_settings_is_the_paired_t_test():
    a = {0: 0.61, 1: 0.58, 2: 0.66, 3: 0.60, 4: 0.63}
    b = {0: 0.60, 1: 0.55, 2: 0.64, 3: 0.60, 4: 0.60}
    effect = setting_effect({"a": a, "b": b})
    t_test = stats.ttest_rel(list(a.values()), list(b.values()))
    assert effect.epsilon == pytest.approx(1.0, rel=1e-12)  # two settings are always spherical
    assert effect.f_value == pytest.approx(t_test.statistic**2, rel=1e-9)
    assert effect.p_value == pytest.approx(t_test.pvalue, rel=1e-9)


def test_setting_effect_needs_two_settings_and_two_shared_seeds_and_handles_no_residual():
    assert setting_effect({"a": {0: 1.0, 1: 2.0}}) is None
    assert setting_effect({"a": {0: 1.0, 1: 2.0}, "b": {1: 1.0, 2: 3.0}}) is None
    same = setting_effect({"a": {0: 1.0, 1: 2.0}, "b": {0: 1.0, 1: 2.0}})
    assert same.p_value == 1.0
    shifted = setting_effect({"a": {0: 1.0, 1: 2.0}, "b": {0: 1.5, 1: 2.5}})
    assert shifted.p_value == 0.0 and shifted.f_value == math.inf


def planted_shifts(
    rng: np.random.Generator, extra: dict[str, float], seeds: int, seed_spread: float, noise: float
) -> dict[str, dict[int, float]]:
    """A lever's per-seed shift in each setting: a shift every setting shares on that seed
    (spread ~ ``seed_spread``), the setting's ``extra``, and independent noise ~ ``noise``."""
    shared = {s: float(rng.normal(-0.005, seed_spread)) for s in range(seeds)}
    return {
        setting: {s: shared[s] + gap + float(rng.normal(0, noise)) for s in range(seeds)}
        for setting, gap in extra.items()
    }


def test_a_shift_shared_by_every_setting_is_not_a_setting_effect():
    """A lever that moves every upsampler by the same amount (however much that varies by seed)
    leaves their comparisons as they were: rejected at about the nominal rate, no more."""
    rng = np.random.default_rng(1)
    trials = 400
    extra = dict.fromkeys(("bilinear", "carafe", "dysample", "nearest"), 0.0)
    rejected = sum(
        setting_effect(planted_shifts(rng, extra, 10, 0.03, 0.005)).p_value < ALPHA
        for _ in range(trials)
    )
    assert rejected / trials <= ALPHA + 0.03  # binomial slack: 400 trials at 5 %


def test_a_consistent_extra_shift_in_one_setting_is_found_under_larger_seed_spread():
    """One upsampler moved 1 point more than the others on every seed, under a seed-to-seed
    spread of the shift three times as large: found in nearly every planted set of 10 seeds."""
    rng = np.random.default_rng(2)
    trials = 200
    extra = {"bilinear": 0.0, "carafe": 0.01, "dysample": 0.0, "nearest": 0.0}
    found, spreads = 0, []
    for _ in range(trials):
        shifts = planted_shifts(rng, extra, 10, 0.03, 0.003)
        spreads.append(np.std([shifts["carafe"][s] for s in range(10)], ddof=1))
        found += setting_effect(shifts).p_value < ALPHA
    assert np.mean(spreads) > 2 * extra["carafe"]  # the gap is hidden in the seed spread
    assert found / trials >= 0.95
