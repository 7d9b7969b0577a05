"""The lever report on planted runs: a lever that changes nothing is not significant, a
consistent gap is, the correction is Holm's over every row, the change is named by its recipe
keys, a lever run on some jobs of a table is paired with those jobs only, and what cannot be
read is refused with one message. And the committed lever tests are what `make levers` builds
from the committed runs."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from tests.helpers import ROOT
from upbench.metrics import compared_metrics
from upbench.report.levers import (
    LEVERS_FILE,
    SHIFTS_FILE,
    SHIFTS_HEADER,
    changes_from,
    choice_in,
    main,
    read_recipe,
    setting_of,
)
from upbench.report.stats import CSV_HEADER, setting_effect
from upbench.report.table import COMPARISONS_FILE

SEEDS = range(5)
CHOICES = {"backbone": "resnet", "upsampler": "bilinear", "decoder": "unet", "data": "synthetic"}
SETTING = "resnet/bilinear/unet/synthetic"


def test_a_setting_names_each_group_choice_of_its_run():
    setting = setting_of({"choices": {**CHOICES, "backbone": "mobilenet", "upsampler": "sapa"}})
    assert setting == "mobilenet/sapa/unet/synthetic"
    assert [choice_in(setting, group) for group in CHOICES] == [
        "mobilenet",
        "sapa",
        "unet",
        "synthetic",
    ]


def write_run(
    run_dir: Path,
    seed: int,
    value: float,
    status: str = "finished",
    choices: dict[str, str] | None = None,
    **recipe,
) -> None:
    """One results.json whose compared metrics are all ``value``, with a config that records
    where it ran (paths, task name, threads) as a real run's does; ``choices`` replace some of
    :data:`CHOICES`."""
    run_dir.mkdir(parents=True)
    out = str(run_dir.resolve())
    config = {
        "seed": seed,
        "task_name": run_dir.parent.name,
        "tags": [run_dir.parent.name],
        "num_threads": 1,
        "paths": {"output_dir": out},
        "trainer": {"max_epochs": 20, "default_root_dir": out},
        "callbacks": {"model_checkpoint": {"dirpath": f"{out}/checkpoints"}},
        "loss": {"dice_weight": 1.0, "class_weights": None},
        "backbone": {"dilate_last": 0},
    }
    for key, setting in recipe.items():
        group, option = key.split("__")
        config[group][option] = setting
    record = {
        "status": status,
        "error": None,
        "choices": {**CHOICES, **(choices or {})},
        "seed": seed,
        "metrics": {},
        "best_metrics": {metric: value for metric in compared_metrics()},
        "params": {},
        "wall_time_s": 1.0,
        "output_dir": out,
        "config": config,
    }
    (run_dir / "results.json").write_text(json.dumps(record))


def planted(tmp_path: Path) -> list[Path]:
    """baseline; ``same`` (another machine's rerun: the same recipe, 0.1-point noise);
    ``gap`` (dice off: 1.5 points lower on every seed, while the seeds spread by ~3 points)."""
    rng = np.random.default_rng(7)
    shared = {s: float(rng.normal(0.80, 0.03)) for s in SEEDS}
    dirs = [tmp_path / name for name in ("baseline", "same", "gap")]
    for s in SEEDS:
        write_run(dirs[0] / str(s), s, shared[s])
        write_run(dirs[1] / str(s), s, shared[s] + float(rng.normal(0, 0.001)), trainer__x=None)
        gap = shared[s] - 0.015 + float(rng.normal(0, 0.002))
        write_run(dirs[2] / str(s), s, gap, loss__dice_weight=0.0)
    # trainer.x is not set in the baseline: "same" must differ in it only, to be named below.
    return dirs


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def test_a_null_lever_is_not_significant_and_a_consistent_gap_is(tmp_path):
    dirs = planted(tmp_path)
    assert main([*map(str, dirs), "--out", str(tmp_path / "out")]) == 0
    rows = read_rows(tmp_path / "out" / COMPARISONS_FILE)
    assert list(rows[0]) == list(CSV_HEADER)
    assert len(rows) == 2 * len(compared_metrics())
    mIoU = {r["method_a"]: r for r in rows if r["metric"] == "test/mIoU"}
    assert {r["method_b"] for r in rows} == {"baseline"}
    assert {r["context"] for r in rows} == {SETTING}
    assert mIoU["same"]["significant"] == "false"
    assert mIoU["gap"]["significant"] == "true"
    assert float(mIoU["gap"]["mean_diff"]) == pytest.approx(-0.015, abs=0.002)
    assert float(mIoU["gap"]["ci_high"]) < 0 < float(mIoU["same"]["ci_high"])
    assert int(mIoU["gap"]["n_pairs"]) == 5


def test_p_values_are_paired_t_tests_holm_corrected_over_every_row(tmp_path):
    dirs = planted(tmp_path)
    main([*map(str, dirs), "--out", str(tmp_path / "out")])
    rows = read_rows(tmp_path / "out" / COMPARISONS_FILE)
    recipes = {d.name: read_recipe(d)[0] for d in dirs}
    for row in rows:
        a = recipes[row["method_a"]].values(row["metric"], row["context"])
        b = recipes["baseline"].values(row["metric"], row["context"])
        expected = stats.ttest_rel([a[s] for s in SEEDS], [b[s] for s in SEEDS]).pvalue
        assert float(row["p_value"]) == pytest.approx(expected)
    # Holm's step-down, written out: the k-th smallest p times (m - k), made monotone, capped at 1.
    raw = [float(r["p_value"]) for r in rows]
    order = sorted(range(len(raw)), key=raw.__getitem__)
    adjusted, running = [0.0] * len(raw), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(raw) - rank) * raw[i]))
        adjusted[i] = running
    assert [float(r["p_adjusted"]) for r in rows] == pytest.approx(adjusted)


def test_a_lever_is_named_by_its_recipe_keys_not_by_where_it_ran(tmp_path):
    baseline_dir, same_dir, gap_dir = planted(tmp_path)
    baseline, _ = read_recipe(baseline_dir)
    # Paths, task name and tags differ in every pair (other directories) and are not named.
    assert changes_from(baseline, read_recipe(gap_dir)[0], SETTING) == ["loss.dice_weight=0.0"]
    assert changes_from(baseline, read_recipe(same_dir)[0], SETTING) == ["trainer.x=null"]
    assert changes_from(baseline, baseline, SETTING) == []
    threads = tmp_path / "threads"
    for s in SEEDS:
        write_run(threads / str(s), s, 0.8)
        path = threads / str(s) / "results.json"
        record = json.loads(path.read_text())
        record["config"]["num_threads"] = None  # where it ran, not what it trained
        path.write_text(json.dumps(record))
    assert changes_from(baseline, read_recipe(threads)[0], SETTING) == []
    main([str(baseline_dir), str(gap_dir), str(threads), "--out", str(tmp_path / "out")])
    markdown = (tmp_path / "out" / LEVERS_FILE).read_text()
    assert f"| gap | {SETTING} | `loss.dice_weight=0.0` | 0, 1, 2, 3, 4 |" in markdown
    assert f"| threads | {SETTING} | same recipe |" in markdown


def test_the_baseline_can_be_named_like_a_lever(tmp_path):
    """A baseline whose directory is named after a table that has moved on (the 16-epoch build
    kept in epochs16/upsamplers_resnet) is named by NAME=DIR, in every file written."""
    baseline_dir, _, gap_dir = planted(tmp_path)
    out = tmp_path / "out"
    assert main([f"epochs16={baseline_dir}", str(gap_dir), "--out", str(out)]) == 0
    rows = read_rows(out / COMPARISONS_FILE)
    assert {(r["method_a"], r["method_b"]) for r in rows} == {("gap", "epochs16")}
    markdown = (out / LEVERS_FILE).read_text()
    assert markdown.startswith("# Levers against `epochs16`")
    assert f"| epochs16 | {SETTING} | (baseline) | 0, 1, 2, 3, 4 |" in markdown
    assert "`baseline`" not in markdown


def test_only_finished_runs_of_common_seeds_are_paired(tmp_path):
    baseline_dir, _, gap_dir = planted(tmp_path)
    short = tmp_path / "short"
    for s in (0, 1, 2):
        write_run(short / str(s), s, 0.7)
    write_run(short / "3", 3, 0.7, status="failed")
    write_run(short / "9", 9, 0.7)  # no baseline run of seed 9
    recipe, notes = read_recipe(short)
    assert sorted(recipe.runs[SETTING]) == [0, 1, 2, 9]
    assert any("failed, left out" in note for note in notes)
    main([str(baseline_dir), str(short), "--out", str(tmp_path / "out")])
    assert {r["n_pairs"] for r in read_rows(tmp_path / "out" / COMPARISONS_FILE)} == {"3"}


def test_a_lever_on_some_jobs_of_a_table_is_paired_with_those_jobs_only(tmp_path, capsys):
    """The baseline is a table (three upsamplers × five seeds); the lever ran two of them,
    one of which gains 2 points on every seed while the other is unchanged, and one upsampler
    the table lacks. Each upsampler is tested on its own pairs, so that the gain of one is not
    spread over both; their mean is one more row (next test)."""
    table, lever = tmp_path / "table", tmp_path / "weighted"
    rng = np.random.default_rng(3)
    for s in SEEDS:
        for i, upsampler in enumerate(("bilinear", "carafe", "nearest")):
            value = float(rng.normal(0.80, 0.03))
            job = {"upsampler": upsampler}
            write_run(table / str(3 * s + i), s, value, choices=job)
            if upsampler == "carafe":
                write_run(lever / f"c{s}", s, value + 0.02, choices=job, loss__class_weights="mf")
            elif upsampler == "nearest":
                write_run(lever / f"n{s}", s, value, choices=job, loss__class_weights="mf")
        write_run(lever / f"d{s}", s, 0.5, choices={"upsampler": "dysample"})
    recipe, _ = read_recipe(table)
    assert set(recipe.runs) == {setting_of({"choices": {**CHOICES, "upsampler": u}})
                                for u in ("bilinear", "carafe", "nearest")}  # fmt: skip
    assert main([str(table), str(lever), "--out", str(tmp_path / "out")]) == 0
    printed = " ".join(capsys.readouterr().out.split())
    assert "weighted: no table run of resnet/dysample/unet/synthetic, not compared" in printed
    rows = read_rows(tmp_path / "out" / COMPARISONS_FILE)
    mIoU = {r["context"]: r for r in rows if r["metric"] == "test/mIoU"}
    assert set(mIoU) == {
        "resnet/carafe/unet/synthetic",
        "resnet/nearest/unet/synthetic",
        "mean of 2 settings",  # the two the table ran, not dysample
    }
    assert len(rows) == 3 * len(compared_metrics())
    carafe, nearest = mIoU["resnet/carafe/unet/synthetic"], mIoU["resnet/nearest/unet/synthetic"]
    assert int(carafe["n_pairs"]) == int(nearest["n_pairs"]) == 5
    assert float(carafe["mean_diff"]) == pytest.approx(0.02)
    assert float(mIoU["mean of 2 settings"]["mean_diff"]) == pytest.approx(0.01)
    assert carafe["significant"] == "true" and nearest["significant"] == "false"
    markdown = (tmp_path / "out" / LEVERS_FILE).read_text()
    # The baseline is listed in the compared settings only, the lever in each of its own.
    assert "| table | resnet/bilinear/unet/synthetic |" not in markdown
    assert "| table | resnet/carafe/unet/synthetic | (baseline) | 0, 1, 2, 3, 4 |" in markdown
    assert "| table | resnet/dysample/unet/synthetic | (baseline) | - |" in markdown
    change = '`loss.class_weights="mf"`'
    assert f"| weighted | resnet/carafe/unet/synthetic | {change} | 0, 1, 2, 3, 4 |" in markdown


def test_a_shift_shared_by_several_settings_is_tested_on_their_mean(tmp_path):
    """The lever lifts three upsamplers of a four-upsampler table by 1 point on every seed, but
    each upsampler's pairs also scatter by ~3 points, opposite ways in different upsamplers:
    no upsampler's test can show the shift, the test of their mean must. Seed 5 ran two of the
    three and is left out of the mean; p is the paired t-test of the per-seed means."""
    table, lever = tmp_path / "table", tmp_path / "dice2"
    rng = np.random.default_rng(11)
    lifted = ("bilinear", "carafe", "nearest")
    base = {(u, s): float(rng.normal(0.80, 0.03)) for u in (*lifted, "pixelshuffle")
            for s in range(6)}  # fmt: skip
    scatter = {}
    for s in range(6):
        a, b = rng.normal(0, 0.03, size=2)
        scatter.update({("bilinear", s): a, ("carafe", s): b})
        scatter["nearest", s] = -(a + b) + rng.normal(0, 0.002)
    for (upsampler, s), value in base.items():
        job = {"upsampler": upsampler}
        write_run(table / f"{upsampler}{s}", s, value, choices=job)
        if upsampler in lifted and (upsampler, s) != ("nearest", 5):
            lifted_value = value + 0.01 + float(scatter[upsampler, s])
            write_run(lever / f"{upsampler}{s}", s, lifted_value, choices=job, loss__dice_weight=2)
    assert main([str(table), str(lever), "--out", str(tmp_path / "out")]) == 0
    rows = read_rows(tmp_path / "out" / COMPARISONS_FILE)
    mIoU = {r["context"]: r for r in rows if r["metric"] == "test/mIoU"}
    pooled = mIoU.pop("mean of 3 settings")
    assert len(mIoU) == 3 and all(row["significant"] == "false" for row in mIoU.values())
    assert pooled["significant"] == "true" and int(pooled["n_pairs"]) == 5
    # The reference: each seed's mean over the three upsamplers, written out from the plant.
    ours = [np.mean([base[u, s] + 0.01 + scatter[u, s] for u in lifted]) for s in range(5)]
    theirs = [np.mean([base[u, s] for u in lifted]) for s in range(5)]
    assert float(pooled["mean_diff"]) == pytest.approx(np.mean(ours) - np.mean(theirs))
    assert float(pooled["mean_diff"]) == pytest.approx(0.01, abs=0.001)
    assert float(pooled["p_value"]) == pytest.approx(stats.ttest_rel(ours, theirs).pvalue)
    markdown = (tmp_path / "out" / LEVERS_FILE).read_text()
    assert f"| mIoU | dice2 | mean of 3 settings | {100 * np.mean(ours):.1f} ± " in markdown


def test_a_lever_run_on_several_backbones_is_tested_on_each_backbones_mean(tmp_path):
    """A table of two backbones x three upsamplers: the lever lifts every MobileNet upsampler by
    1 point on every seed, scattered by ~3 points per upsampler so that no upsampler's own test
    shows it, and leaves ResNet as it was (noise only). The MobileNet mean must show the lift,
    the ResNet mean must not; each is the paired t-test of its per-seed means, and each is
    tested for a shift that differs between its upsamplers."""
    table, lever = tmp_path / "table", tmp_path / "dice2"
    rng = np.random.default_rng(13)
    upsamplers, seeds = ("bilinear", "carafe", "nearest"), range(6)
    ours: dict[str, list[list[float]]] = {"mobilenet": [], "resnet": []}
    theirs: dict[str, list[list[float]]] = {"mobilenet": [], "resnet": []}
    for backbone in ("mobilenet", "resnet"):
        for s in seeds:
            a, b = rng.normal(0, 0.03, size=2)
            scatter = {"bilinear": a, "carafe": b, "nearest": -(a + b)}
            for upsampler in upsamplers:
                job = {"backbone": backbone, "upsampler": upsampler}
                value = float(rng.normal(0.80, 0.03))
                lifted = value + float(rng.normal(0, 0.002))
                if backbone == "mobilenet":
                    lifted += 0.01 + float(scatter[upsampler])
                write_run(table / f"{backbone}{upsampler}{s}", s, value, choices=job)
                write_run(lever / f"{backbone}{upsampler}{s}", s, lifted, choices=job,
                          loss__dice_weight=2)  # fmt: skip
                theirs[backbone].append([s, value])
                ours[backbone].append([s, lifted])
    assert main([str(table), str(lever), "--out", str(tmp_path / "out")]) == 0
    rows = read_rows(tmp_path / "out" / COMPARISONS_FILE)
    mIoU = {r["context"]: r for r in rows if r["metric"] == "test/mIoU"}
    assert len(mIoU) == 6 + 2 + 1 and "mean of 6 settings" in mIoU
    for backbone, significant in (("mobilenet", "true"), ("resnet", "false")):
        row = mIoU[f"{backbone}: mean of 3 settings"]
        per_seed = [[np.mean([v for seed, v in values[backbone] if seed == s]) for s in seeds]
                    for values in (ours, theirs)]  # fmt: skip
        assert int(row["n_pairs"]) == 6
        assert float(row["mean_diff"]) == pytest.approx(np.mean(per_seed[0]) - np.mean(per_seed[1]))
        assert float(row["p_value"]) == pytest.approx(stats.ttest_rel(*per_seed).pvalue)
        assert row["significant"] == significant
    lift = float(mIoU["mobilenet: mean of 3 settings"]["mean_diff"])
    assert lift == pytest.approx(0.01, abs=0.002)
    assert all(mIoU[f"{b}/{u}/unet/synthetic"]["significant"] == "false"
               for b in ("mobilenet", "resnet") for u in upsamplers)  # fmt: skip
    shifts = {r["context"]: r for r in read_rows(tmp_path / "out" / SHIFTS_FILE)
              if r["metric"] == "test/mIoU"}  # fmt: skip
    assert set(shifts) == {"mobilenet: mean of 3 settings", "resnet: mean of 3 settings",
                           "mean of 6 settings"}  # fmt: skip
    assert shifts["mobilenet: mean of 3 settings"]["n_settings"] == "3"


def test_a_lever_that_moves_one_setting_more_is_told_from_one_that_moves_all_alike(tmp_path):
    """Two levers on a three-upsampler table, 8 seeds whose shift scatters by ~2 points: `alike`
    moves every upsampler by the same amount on a seed, `uneven` moves carafe 1.5 points more
    on every seed. Only `uneven` changes the table's comparisons, and only its shift differs
    between settings. `alike`'s runs lie in two directories, read as one recipe."""
    table, alike, uneven = tmp_path / "table", tmp_path / "alike", tmp_path / "uneven"
    rng = np.random.default_rng(5)
    upsamplers, seeds = ("bilinear", "carafe", "nearest"), range(8)
    base = {(u, s): float(rng.normal(0.80, 0.03)) for u in upsamplers for s in seeds}
    shared = {s: float(rng.normal(0.0, 0.02)) for s in seeds}
    shifts: dict[str, dict[str, dict[int, float]]] = {"alike": {}, "uneven": {}}
    for (upsampler, s), value in base.items():
        job = {"upsampler": upsampler}
        write_run(table / f"{upsampler}{s}", s, value, choices=job)
        for name, extra in (("alike", 0.0), ("uneven", 0.015 * (upsampler == "carafe"))):
            shift = shared[s] + extra + float(rng.normal(0, 0.002))
            shifts[name].setdefault(setting_of({"choices": {**CHOICES, **job}}), {})[s] = shift
            folder = (alike / ("a" if s < 4 else "b")) if name == "alike" else uneven
            write_run(
                folder / f"{upsampler}{s}", s, value + shift, choices=job, loss__dice_weight=2
            )
    lever_args = [f"alike={alike / 'a'},{alike / 'b'}", str(uneven)]
    assert main([str(table), *lever_args, "--out", str(tmp_path / "out")]) == 0
    rows = read_rows(tmp_path / "out" / SHIFTS_FILE)
    assert list(rows[0]) == list(SHIFTS_HEADER)
    assert len(rows) == 2 * len(compared_metrics())
    mIoU = {r["lever"]: r for r in rows if r["metric"] == "test/mIoU"}
    assert mIoU["alike"]["context"] == mIoU["uneven"]["context"] == "mean of 3 settings"
    assert (mIoU["alike"]["n_seeds"], mIoU["alike"]["n_settings"]) == ("8", "3")
    assert mIoU["alike"]["significant"] == "false" and mIoU["uneven"]["significant"] == "true"
    for name, row in mIoU.items():
        assert float(row["p_value"]) == pytest.approx(setting_effect(shifts[name]).p_value)
    raw = sorted(float(r["p_value"]) for r in rows)
    assert min(float(r["p_adjusted"]) for r in rows) == pytest.approx(min(1, len(raw) * raw[0]))
    markdown = (tmp_path / "out" / LEVERS_FILE).read_text()
    assert "| mIoU | uneven | mean of 3 settings | 8 | " in markdown
    assert (
        "| alike | resnet/carafe/unet/synthetic | `loss.dice_weight=2` | 0, 1, 2, 3, 4, 5, 6, 7 |"
        in (markdown)
    )


@pytest.mark.parametrize("problem", ["missing", "duplicate seed", "nothing finished", "same name"])
def test_unreadable_directories_are_refused_with_one_message(tmp_path, capsys, problem):
    baseline_dir, _, gap_dir = planted(tmp_path)
    lever = gap_dir
    if problem == "missing":
        lever = tmp_path / "nowhere"
    elif problem == "duplicate seed":
        write_run(gap_dir / "again", 2, 0.7)
    elif problem == "nothing finished":
        lever = tmp_path / "running"
        write_run(lever / "0", 0, 0.7, status="running")
    else:
        lever = tmp_path / "other" / "baseline"
        write_run(lever / "0", 0, 0.7)
    out = tmp_path / "out"
    assert main([str(baseline_dir), str(lever), "--out", str(out)]) == 2
    printed = capsys.readouterr().out
    assert "error:" in printed and "Traceback" not in printed
    expected = {
        "missing": "nowhere: no such directory",
        "duplicate seed": "two finished runs of seed 2",
        "nothing finished": "running: no finished run",
        "same name": "two run directories share a name",
    }[problem]
    assert expected in " ".join(printed.split())
    assert not out.exists()  # nothing half-written


def test_committed_lever_tests_are_what_make_levers_builds(tmp_path):
    """experiments/README.md quotes these files: they must come from the committed runs."""
    makefile = (ROOT / "Makefile").read_text()

    def variable(name: str) -> str:
        return re.search(rf"^{name} \?= (.+)$", makefile, re.M).group(1)

    families = re.findall(r"upbench\.report\.levers \$\((\w+)\) --out \$\((\w+)\)", makefile)
    assert len(families) == 5
    for dirs, out in families:
        built = tmp_path / out
        # A lever NAME=DIR,DIR names its directories relative to the root, as make runs them.
        arguments = [re.sub(r"([=,]|^)(?=experiments/)", rf"\g<1>{ROOT}/", d)
                     for d in variable(dirs).split()]  # fmt: skip
        assert main([*arguments, "--out", str(built)]) == 0
        for name in (COMPARISONS_FILE, SHIFTS_FILE, LEVERS_FILE):
            committed = ROOT / variable(out) / name
            assert (built / name).read_text() == committed.read_text(), committed
