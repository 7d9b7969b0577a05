"""The statistics of the report on planted results: what is the same must not come out
significant, a consistent gap must, and the numbers must be those of the textbook formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from upbench.report.stats import ALPHA, ci_half_width, comparisons, paired_difference

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
