"""Every job of every table sweep (conf/experiment/*.yaml) composes, passes the config checks and
builds a model whose logits have the data's shape, so that a table cannot fail at job 47 of 90
on a combination nobody tried."""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from scipy import stats

from tests.helpers import CONF_DIR, ROOT, compose_config, group_options
from upbench.instantiate import instantiate
from upbench.model import build_model
from upbench.results import recipe_changes
from upbench.validation import validate_config, validate_setup


def sweep(experiment: str) -> tuple[str, list[list[str]]]:
    """The Hydra launcher of ``experiment`` and the overrides of each of its jobs, expanded from
    ``hydra.sweeper.params`` by Hydra's own override parser, as the basic sweeper does."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", [f"experiment={experiment}"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    params = OverridesParser.create().parse_overrides(
        [f"{key}={value}" for key, value in cfg.hydra.sweeper.params.items()]
    )
    axes = [
        [f"{p.get_key_element()}={v}" for v in p.sweep_string_iterator()]
        if p.is_sweep_override()
        else [f"{p.get_key_element()}={p.get_value_element_as_str()}"]
        for p in params
    ]
    jobs = [list(job) for job in itertools.product(*axes)]
    return cfg.hydra.runtime.choices["hydra/launcher"], jobs


def _without_seed(job: list[str]) -> tuple[str, ...]:
    return tuple(override for override in job if not override.startswith("seed="))


# One job per distinct network and data of each table: the seed changes no part that is built.
JOBS = [
    pytest.param(experiment, launcher, list(job), id=f"{experiment}:{','.join(job)}")
    for experiment in group_options("experiment")
    for launcher, jobs in [sweep(experiment)]
    for job in dict.fromkeys(_without_seed(job) for job in jobs)
]


def test_every_experiment_is_a_sweep():
    for experiment in group_options("experiment"):
        assert len(sweep(experiment)[1]) > 1, f"{experiment} defines no sweep"


def test_every_table_pairs_at_least_5_seeds_per_cell():
    for experiment in group_options("experiment"):
        cells: dict[tuple[str, ...], set[str]] = {}
        for job in sweep(experiment)[1]:
            seeds = [override for override in job if override.startswith("seed=")]
            cells.setdefault(_without_seed(job), set()).update(seeds)
        counts = {len(seeds) for seeds in cells.values()}
        assert len(counts) == 1 and min(counts) >= 5, (experiment, counts)


def test_the_backbone_table_sweeps_every_built_in_backbone_and_upsampler_of_the_resnet_table():
    """Every job of upsamplers_resnet (15 seeds x 10 upsamplers) on each backbone: 450 jobs, and
    job s*10 + u of that table is job s*30 + 3*u here (its ResNet runs can be copied over)."""
    resnet_jobs = sweep("upsamplers_resnet")[1]
    backbone_jobs = sweep("upsamplers_x_backbones")[1]
    assert {job[-1] for job in backbone_jobs} == {
        "backbone=resnet",
        "backbone=inception",
        "backbone=mobilenet",
    }
    assert {tuple(job[:-1]) for job in backbone_jobs} == {tuple(job) for job in resnet_jobs}
    for index, job in enumerate(resnet_jobs):
        seed, upsampler = divmod(index, 10)
        assert job[0] == f"seed={seed}"
        assert backbone_jobs[seed * 30 + 3 * upsampler] == [*job, "backbone=resnet"]
    assert len(resnet_jobs) == 150
    assert len(backbone_jobs) == 450


def test_a_resnet_job_of_the_backbone_table_is_that_job_of_the_resnet_table_at_16_epochs(tmp_path):
    """The copy above only saves hours if the sweep then skips the copied runs as its own: for
    each upsampler, the job composed by either experiment trains the same recipe (its table's
    name and W&B tags are labels, not recipe), at the budget its ResNet rows were copied at. The
    backbone table is not yet rebuilt at the resnet table's 24 epochs: its rows are that table's
    16-epoch build (experiments/runs/epochs16/upsamplers_resnet), and the budget is the one
    recipe key in which the two tables differ today."""
    for job in sweep("upsamplers_resnet")[1][:10]:
        resnet_table, resnet_at_16, backbone_table = (
            OmegaConf.to_container(compose_config(tmp_path, overrides), resolve=True)
            for overrides in (
                ["experiment=upsamplers_resnet", *job],
                ["experiment=upsamplers_resnet", *job, "trainer.max_epochs=16"],
                ["experiment=upsamplers_x_backbones", *job, "backbone=resnet"],
            )
        )
        assert resnet_table["task_name"] != backbone_table["task_name"]
        assert recipe_changes(resnet_at_16, backbone_table) == [], job
        assert recipe_changes(resnet_table, backbone_table) == [
            "trainer.max_epochs=24 there, 16 now"
        ], job


@pytest.mark.parametrize(("experiment", "launcher", "job"), JOBS)
def test_every_sweep_job_builds(tmp_path, experiment, launcher, job):
    cfg = compose_config(tmp_path, [f"experiment={experiment}", *job])
    validate_config(cfg, launcher=launcher)
    datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule.num_classes)
    validate_setup(cfg, datamodule, model)
    size = cfg.data.image_size
    with torch.no_grad():
        logits = model(torch.randn(2, datamodule.in_channels, size, size))
    assert logits.shape == (2, datamodule.num_classes, size, size)


@pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs the git checkout"
)
def test_make_table_sweeps_where_its_records_are_committed_and_its_weights_are_not():
    """A table takes longer than a session, and a new session starts from a clone: the finished
    jobs it skips must be in the repository. So make table's sweep directory is not ignored,
    except for the checkpoints and W&B files of its runs."""
    default = re.search(r"^SWEEP_DIR \?= (.+)$", (ROOT / "Makefile").read_text(), re.M)
    job = default.group(1).replace("$(TABLE)", "upsamplers_brain") + "/7"

    def ignored(path: str) -> bool:
        check = subprocess.run(["git", "check-ignore", "--no-index", "-q", path], cwd=ROOT)
        assert check.returncode in (0, 1), check
        return check.returncode == 0

    for record in ("results.json", "csv/version_0/metrics.csv", ".hydra/config.yaml"):
        assert not ignored(f"{job}/{record}"), record
    assert not ignored(f"{job}/../multirun.yaml")
    for heavy in ("checkpoints/last.ckpt", "checkpoints/best.ckpt.tmp", "wandb/run.wandb"):
        assert ignored(f"{job}/{heavy}"), heavy


def committed_jobs() -> list[Path]:
    return sorted((ROOT / "experiments" / "runs").glob("*/*/results.json"))


def finished_runs(table: str) -> list[tuple[Path, dict]]:
    """The finished runs committed under experiments/runs/<table>/, as (results.json, record)."""
    paths = [path for path in committed_jobs() if path.parts[-3] == table]
    records = [(path, json.loads(path.read_text())) for path in paths]
    return [(path, record) for path, record in records if record["status"] == "finished"]


@pytest.mark.parametrize(
    "table", sorted({path.parts[-3] for path in committed_jobs()}) or ["none committed"]
)
def test_committed_runs_are_the_jobs_their_experiment_composes_today(tmp_path, table):
    """Every finished run committed under experiments/runs/<table>/ was trained with the recipe
    that `make table TABLE=<table>` composes now, so the table it skips them into is the one the
    command builds. Editing a committed table's recipe (or a default it inherits) without
    rebuilding it fails here."""
    if table == "none committed":
        pytest.skip("no committed sweep")
    for path, record in finished_runs(table):
        overrides = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
        # Composed with this table's experiment, whichever it was filed under: a job copied
        # from another table (x_backbones' ResNet rows from upsamplers_resnet) must be this one's.
        overrides = [o for o in overrides if not o.startswith(("hydra", "experiment="))]
        cfg = compose_config(tmp_path / "job", [*overrides, f"experiment={table}"])
        current = OmegaConf.to_container(cfg, resolve=True)
        assert recipe_changes(record["config"], current) == [], path


def tables_with_committed_results_and_runs() -> list[str]:
    results = ROOT / "experiments" / "results"
    return sorted(
        path.parent.name
        for path in results.glob("*/runs.csv")
        if (ROOT / "experiments" / "runs" / path.parent.name).is_dir()
    )


def finished_rows_of_runs_csv(table: str) -> list[dict[str, str]]:
    """The finished runs' rows of experiments/results/<table>/runs.csv, the committed report."""
    with (ROOT / "experiments" / "results" / table / "runs.csv").open() as file:
        return [row for row in csv.DictReader(file) if row["status"] == "finished"]


@pytest.mark.parametrize("table", tables_with_committed_results_and_runs() or ["none committed"])
def test_a_committed_table_is_the_report_of_its_committed_runs(table):
    """experiments/results/<table>/runs.csv, the per-run numbers behind the table and its
    statistics, holds exactly the finished runs committed under experiments/runs/<table>/, with
    their own test metrics: a table left over from other runs (or a half-finished sweep's) fails
    here, so every number the README quotes is one that `make table` rebuilds."""
    if table == "none committed":
        pytest.skip("no table with committed runs")
    expected = {
        (record["choices"]["backbone"], record["choices"]["upsampler"], record["seed"]): record[
            "best_metrics"
        ]["test/mIoU"]
        for _, record in finished_runs(table)
    }
    rows = finished_rows_of_runs_csv(table)
    reported = {
        (row["backbone"], row["upsampler"], int(row["seed"])): float(row["best_metrics:test/mIoU"])
        for row in rows
    }
    assert len(rows) == len(reported), "a run appears twice in runs.csv"
    assert reported.keys() == expected.keys()
    for key, miou in expected.items():
        assert reported[key] == pytest.approx(miou, rel=1e-9, abs=0), key


# Cells allowed over the 1.5-point target, with where the README explains why. A cell that meets
# the target again fails the test below too, so that this list cannot outlive its reason.
WIDE_CELLS = {
    ("upsamplers_segformer", "resnet", "sapa"): "README: SAPA on tiny maps",
}
CI_HALF_WIDTH_TARGET = 1.5  # test mIoU points, issue 13


@pytest.mark.parametrize("table", tables_with_committed_results_and_runs() or ["none committed"])
def test_a_committed_table_meets_the_precision_targets(table):
    """Issue 13's targets on every committed table, recomputed from its per-run numbers
    (runs.csv) with scipy's t interval: no run collapsed to one class, at least 5 finished runs
    a cell, and a 95 % CI half-width of test mIoU of at most 1.5 points in every cell but the
    documented :data:`WIDE_CELLS`."""
    if table == "none committed":
        pytest.skip("no table with committed runs")
    rows = finished_rows_of_runs_csv(table)
    assert [row for row in rows if row["collapsed"] != "False"] == []
    cells: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        miou = 100 * float(row["best_metrics:test/mIoU"])
        cells.setdefault((row["backbone"], row["upsampler"]), []).append(miou)
    for (backbone, upsampler), mious in cells.items():
        assert len(mious) >= 5, (backbone, upsampler)
        low, high = stats.t.interval(
            0.95, len(mious) - 1, loc=np.mean(mious), scale=stats.sem(mious)
        )
        half_width = (high - low) / 2
        listed = (table, backbone, upsampler) in WIDE_CELLS
        assert (half_width <= CI_HALF_WIDTH_TARGET) != listed, (
            f"{table} {backbone}/{upsampler}: 95 % CI half-width {half_width:.2f}"
        )


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
# SIGTERM and SIGKILL stand for Ctrl-C and kill: a suite run in the background inherits an
# ignored SIGINT, which a shell cannot reset, so a SIGINT case would not stop the stand-in.
@pytest.mark.parametrize(
    ("sweep_exit", "builds_table"),
    [("exit 0", True), ("exit 1", True), ("kill -TERM $$", False), ("kill -KILL $$", False)],
)
def test_make_table_builds_the_table_unless_the_sweep_was_stopped(
    tmp_path, sweep_exit, builds_table
):
    """A finished sweep, or one with failed jobs (non-zero exit), still gets its table; a sweep
    stopped by a signal does not, so an interrupted build never overwrites the committed table
    with a partial one. The Makefile runs against a stand-in interpreter that logs its calls."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    calls = tmp_path / "calls.log"
    python = venv / "bin" / "python"
    python.write_text(
        f'#!/bin/sh\necho "$*" >> {calls}\ncase "$1" in train.py) {sweep_exit};; esac\n'
    )
    python.chmod(0o755)
    (venv / ".installed-stamp").touch()  # newer than pyproject.toml: no install
    made = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "table",
            f"VENV={venv}",
            "TABLE=upsamplers_resnet",
            f"SWEEP_DIR={tmp_path / 'sweep'}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    logged = calls.read_text().splitlines()
    assert logged[0].startswith("train.py -m experiment=upsamplers_resnet")
    assert any("upbench.report" in line for line in logged) == builds_table, logged
    assert (made.returncode == 0) == builds_table, made.stderr
    if not builds_table:
        assert "no table built" in made.stderr
