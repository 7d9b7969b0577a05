"""The table builder: aggregation over seeds, failed runs, outputs, plots and --check."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import ROOT, TINY, compose_config
from upbench.instantiate import instantiate
from upbench.model import build_model
from upbench.report.cli import main
from upbench.report.plots import prediction_grids, scatter_plots
from upbench.report.summary import summary_markdown
from upbench.report.table import Stat, build_table
from upbench.results import PREDICTED_IMAGES, write_predictions, write_results
from upbench.task import SegmentationTask

UPSAMPLER_CONF = ROOT / "conf" / "upsampler"
CHOICES = {"backbone": "resnet", "decoder": "unet", "data": "synthetic"}
# (upsampler, seed) -> final and best-checkpoint test metrics, written by hand.
FINAL = {
    ("bilinear", 0): {"test/mIoU": 0.50, "test/pixel_acc": 0.80, "test/boundary_iou": 0.30},
    ("bilinear", 1): {"test/mIoU": 0.54, "test/pixel_acc": 0.82, "test/boundary_iou": 0.36},
    ("bilinear", 2): {"test/mIoU": 0.49, "test/pixel_acc": 0.79, "test/boundary_iou": 0.31},
    ("pixelshuffle", 0): {"test/mIoU": 0.60, "test/pixel_acc": 0.85, "test/boundary_iou": 0.40},
    ("pixelshuffle", 1): {"test/mIoU": 0.64, "test/pixel_acc": 0.86, "test/boundary_iou": 0.42},
}
BEST_BONUS = 0.01  # the best-val checkpoint scores this much higher in the fabricated records


def record(upsampler: str, seed: int, status: str, out: Path, backbone: str = "resnet") -> dict:
    metrics = dict(FINAL.get((upsampler, seed), {})) if status == "finished" else {}
    extra = {"test/loss": 0.7, "test/IoU_curve": 0.1, "val/mIoU": 0.5} if metrics else {}
    return {
        "status": status,
        "error": None if status == "finished" else "RuntimeError: boom",
        "choices": {**CHOICES, "backbone": backbone, "upsampler": upsampler},
        "seed": seed,
        "metrics": {**metrics, **extra},
        "best_metrics": {k: v + BEST_BONUS for k, v in metrics.items()},
        "params": {"total": 1000, "upsampler": 10 * (upsampler == "pixelshuffle")},
        "wall_time_s": 1.0,
        "output_dir": str(out),
        "config": {
            "seed": seed,
            "upsampler": OmegaConf.to_container(
                OmegaConf.load(UPSAMPLER_CONF / f"{upsampler}.yaml")
            ),
        },
    }


def write_runs(root: Path, runs, backbone: str = "resnet") -> Path:
    for i, (upsampler, seed, status) in enumerate(runs):
        out = root / "multirun" / backbone / str(i)
        out.mkdir(parents=True)
        write_results(out, record(upsampler, seed, status, out, backbone))
    return root


RUNS = [
    ("bilinear", 0, "finished"),
    ("bilinear", 1, "finished"),
    ("bilinear", 2, "finished"),
    ("bilinear", 3, "failed"),
    ("pixelshuffle", 0, "finished"),
    ("pixelshuffle", 1, "finished"),
    ("transposed", 0, "failed"),
    ("transposed", 1, "interrupted"),
    ("nearest", 0, "running"),
]


@pytest.fixture
def runs(tmp_path) -> Path:
    return write_runs(tmp_path / "runs", RUNS)


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with path.open(newline="") as f:
        return {row["upsampler"]: row for row in csv.DictReader(f)}


def test_one_row_per_method_with_mean_and_sample_std(runs):
    table = build_table([runs])
    assert [row.choices["upsampler"] for row in table.rows] == [
        "bilinear",
        "nearest",
        "pixelshuffle",
        "transposed",
    ]
    assert table.metrics == ["test/mIoU", "test/pixel_acc", "test/boundary_iou"]
    rows = {row.choices["upsampler"]: row for row in table.rows}
    for upsampler, seeds in (("bilinear", (0, 1, 2)), ("pixelshuffle", (0, 1))):
        for metric in table.metrics:
            values = [FINAL[upsampler, s][metric] for s in seeds]
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            final = rows[upsampler].cells["metrics", metric]
            best = rows[upsampler].cells["best_metrics", metric]
            assert final.n == best.n == len(seeds)
            assert final.mean == pytest.approx(mean) and final.std == pytest.approx(std)
            assert best.mean == pytest.approx(mean + BEST_BONUS)
            assert best.std == pytest.approx(std)


def test_failed_interrupted_and_running_runs_are_shown(runs):
    table = build_table([runs])
    cells = {row[1]: row for row in table.display_rows()}
    header = table.header()
    status = header.index("runs")
    miou = header.index("mIoU (%) [best-val ckpt]")
    assert cells["bilinear"][status] == "3 finished, 1 failed"
    assert cells["bilinear"][miou].startswith("52.00 ± 2.65 (n=3)")
    assert cells["transposed"][status] == "1 interrupted, 1 failed"
    assert cells["transposed"][miou] == "interrupted/failed"
    assert cells["nearest"][status] == "1 running"
    assert cells["nearest"][miou] == "running"


def test_single_failed_run_says_failed(tmp_path):
    table = build_table(
        [write_runs(tmp_path, [("bilinear", 0, "finished"), ("nearest", 0, "failed")])]
    )
    row = next(r for r in table.display_rows() if r[1] == "nearest")
    assert row[table.header().index("mIoU (%) [final weights]")] == "failed"
    assert row[table.header().index("runs")] == "1 failed"


def test_cli_writes_tables_and_plots(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert (
        main(
            [
                str(runs),
                "--out",
                str(out),
                "--profile-shape",
                "1",
                "4",
                "4",
                "4",
                "--scale",
                "2",
                "--repeats",
                "1",
            ]
        )
        == 0
    )
    for name in ("results.md", "results.csv", "results.tex", "runs.csv", "summary.md"):
        assert (out / name).stat().st_size > 100, name
    with (out / "runs.csv").open() as f:
        runs_csv = list(csv.DictReader(f))
    assert [(r["upsampler"], int(r["seed"]), r["status"]) for r in runs_csv] == sorted(
        RUNS, key=lambda run: run[:2]
    )
    for run in runs_csv:
        expected = FINAL.get((run["upsampler"], int(run["seed"])), {}).get("test/mIoU")
        if run["status"] == "finished":
            assert float(run["metrics:test/mIoU"]) == expected
            assert float(run["best_metrics:test/mIoU"]) == pytest.approx(expected + BEST_BONUS)
        else:
            assert run["metrics:test/mIoU"] == ""
    rows = read_csv(out / "results.csv")
    assert set(rows) == {"bilinear", "nearest", "pixelshuffle", "transposed"}
    values = [FINAL["pixelshuffle", s]["test/mIoU"] + BEST_BONUS for s in (0, 1)]
    assert float(rows["pixelshuffle"]["best_metrics:test/mIoU:mean"]) == pytest.approx(
        statistics.fmean(values)
    )
    assert rows["transposed"]["metrics:test/mIoU:mean"] == "interrupted/failed"
    assert rows["bilinear"]["n_failed"] == "1"
    # Upsampler cost at the stated shape: pixelshuffle's 3x3 conv to 4*4 channels, bilinear 0.
    assert int(rows["pixelshuffle"]["params"]) == 9 * 4 * 16 + 16
    assert int(rows["bilinear"]["params"]) == 0
    markdown = (out / "results.md").read_text()
    assert "(N=1, C=4, H=4, W=4), scale x2" in markdown and "best-val ckpt" in markdown
    assert "hand count in bilinear" in markdown
    latex = (out / "results.tex").read_text()
    assert r"\begin{tabular}" in latex and r"$52.00 \pm 2.65$" in latex
    for name in ("accuracy_vs_params.png", "accuracy_vs_latency.png"):
        png = (out / name).read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5000, name
    summary = (out / "summary.md").read_text()
    assert "| upsampler params | fwd+bwd ms |" in summary
    assert summary_lines(summary)[0][:4] == [
        "pixelshuffle",
        "2 finished",
        "-",  # fabricated runs have no CSV log, so no learning curve to judge convergence by
        "**63.0 ± 25.4 (n=2)**",
    ]
    printed = capsys.readouterr().out
    assert summary.splitlines()[2] in printed
    # Neither predictions nor checkpoints in fabricated runs: the grid is skipped with a note.
    assert "no finished run with predictions.pt of 4 images or checkpoints" in printed


def summary_lines(markdown: str) -> list[list[str]]:
    """The cells of the summary's table rows (header and separator dropped)."""
    rows = [line for line in markdown.splitlines() if line.startswith("| ")][1:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_summary_ranks_upsamplers_by_best_checkpoint_miou(runs):
    lines = summary_lines(summary_markdown(build_table([runs])))
    # Best-checkpoint mIoU: pixelshuffle (0.61, 0.65), bilinear (0.51, 0.55, 0.50), shown as
    # mean ± 95 % CI half-width t(0.975, n-1) * std / sqrt(n): 12.706 * 2.828 / sqrt(2) = 25.4
    # and 4.303 * 2.646 / sqrt(3) = 6.6. n is shown where fewer seeds finished than in the
    # fullest row; the groups without a finished run come last and say why. Bilinear trails the
    # best by exactly 10 points on both shared seeds, a certain difference, so only the best is
    # bold.
    assert lines == [
        ["pixelshuffle", "2 finished", "-", "**63.0 ± 25.4 (n=2)**"],
        ["bilinear", "3 finished, 1 failed", "-", "52.0 ± 6.6"],
        ["nearest", "1 running", "-", "running"],
        ["transposed", "1 interrupted, 1 failed", "-", "interrupted/failed"],
    ]


def test_summary_pivots_a_second_varying_group_into_columns(tmp_path):
    root = tmp_path / "runs"
    write_runs(
        root,
        [("bilinear", 0, "finished"), ("bilinear", 1, "finished"), ("pixelshuffle", 1, "failed")],
        "resnet",
    )
    write_runs(root, [("bilinear", 2, "finished"), ("pixelshuffle", 0, "finished")], "mobilenet")
    table = build_table([root])
    markdown = summary_markdown(table)
    assert markdown.startswith("| upsampler | mobilenet | resnet | mean mIoU (%) |")
    bilinear_resnet = [FINAL["bilinear", s]["test/mIoU"] + BEST_BONUS for s in (0, 1)]
    bilinear_mobilenet = FINAL["bilinear", 2]["test/mIoU"] + BEST_BONUS
    mean = 100 * (statistics.fmean(bilinear_resnet) + bilinear_mobilenet) / 2
    # Bold marks each column's best; bilinear and pixelshuffle share no seed on mobilenet, so
    # no test can tie bilinear with the best there.
    assert summary_lines(markdown) == [
        ["bilinear", "50.0 (n=1)", "**53.0 ± 25.4**", f"{mean:.1f}"],
        # No mean over the backbones when one of them has no number: it would rank unfairly.
        ["pixelshuffle", "**61.0 (n=1)**", "failed", "-"],
    ]
    # The scatter plot colours the same second group (one legend entry per backbone).
    (png,), notes = scatter_plots(table, tmp_path)
    assert png.read_bytes().startswith(b"\x89PNG") and png.name == "accuracy_vs_params.png"
    assert notes == ["accuracy_vs_latency.png skipped: no profile (--no-profile)"]


def test_prediction_grids_make_one_figure_per_backbone(tmp_path):
    """Runs on two backbones give one grid each (not one grid of every column), every method's
    prediction read from its run's predictions.pt or, for a run without one, loaded from its
    checkpoint through its recorded config. Both are the files beside results.json, not at the
    recorded output_dir: a committed sweep is read from wherever it was cloned."""
    for i, backbone in enumerate(("resnet", "mobilenet")):
        out = tmp_path / "runs" / str(i)
        cfg = compose_config(out, [*TINY, f"backbone={backbone}", "upsampler=bilinear"])
        datamodule = instantiate(cfg.data)
        num_classes = datamodule.num_classes
        network = build_model(cfg, num_classes)
        if backbone == "resnet":  # a run recorded before runs wrote predictions.pt
            task = SegmentationTask(network, num_classes, optimizer=None)
            (out / "checkpoints").mkdir(parents=True)
            torch.save({"state_dict": task.state_dict()}, out / "checkpoints" / "best.ckpt")
        else:  # a committed run: its predictions, no checkpoint
            out.mkdir(parents=True)
            images = datamodule.first_test_images(PREDICTED_IMAGES)["image"]
            write_predictions(out, network.eval()(images).argmax(dim=1), "best")
        run = record("bilinear", 0, "finished", out, backbone)
        run["config"] = OmegaConf.to_container(cfg, resolve=True)
        run["output_dir"] = str(tmp_path / "cloned_elsewhere" / str(i))
        write_results(out, run)
    written, notes = prediction_grids(build_table([tmp_path / "runs"]), tmp_path, count=2)
    assert notes == []
    assert sorted(path.name for path in written) == [
        "predictions_synthetic_mobilenet.png",
        "predictions_synthetic_resnet.png",
    ]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in written)


def shifted_runs(root: Path, shift: float) -> Path:
    """The fabricated runs, with every pixelshuffle seed's best test mIoU moved by ``shift``."""
    root = write_runs(root, RUNS)
    for path in root.rglob("results.json"):
        data = json.loads(path.read_text())
        if data["choices"]["upsampler"] == "pixelshuffle":
            data["best_metrics"]["test/mIoU"] += shift
            path.write_text(json.dumps(data))
    return root


def test_check_passes_identical_and_flags_a_cell_beyond_the_spread(runs, tmp_path, capsys):
    committed = tmp_path / "committed"
    assert main([str(runs), "--out", str(committed), "--no-profile", "--no-plots"]) == 0
    assert main(["--check", str(committed), str(runs)]) == 0
    # pixelshuffle best mIoU: seeds 0.61, 0.65 -> std 0.028, so 2 std = 0.057: a shift of both
    # seeds by 0.01 stays within the spread, one by 0.1 does not.
    within = shifted_runs(tmp_path / "within", 0.01)
    assert main(["--check", str(committed), str(within)]) == 0
    beyond = shifted_runs(tmp_path / "beyond", 0.1)
    capsys.readouterr()
    assert main(["--check", str(committed), str(beyond)]) == 1
    printed = capsys.readouterr().out
    assert "pixelshuffle" in printed and "best_metrics:test/mIoU" in printed
    assert "1 cell(s) differ" in printed


def test_check_flags_a_run_that_now_failed(runs, tmp_path):
    committed = tmp_path / "committed"
    main([str(runs), "--out", str(committed), "--no-profile", "--no-plots"])
    changed = write_runs(
        tmp_path / "new", [r if r[0] != "pixelshuffle" else (r[0], r[1], "failed") for r in RUNS]
    )
    assert main(["--check", str(committed), str(changed)]) == 1


def test_stat_of_one_value_has_no_std():
    assert Stat.of([0.5]) == Stat(0.5, None, 1)
    assert Stat.of([]) is None


def test_empty_directory_raises_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no results.json"):
        build_table([tmp_path])


@pytest.mark.slow
def test_real_multirun_table_matches_the_runs_own_records(tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "upsampler=bilinear,nearest",
            "seed=0,1",
            "data.num_train=16",
            "data.num_val=8",
            "data.num_test=8",
            "data.image_size=32",
            "data.batch_size=8",
            "backbone.width=8",
            "trainer.max_epochs=2",
            "logger=csv",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "report"
    assert (
        main(
            [
                str(sweep),
                "--out",
                str(out),
                "--profile-shape",
                "1",
                "8",
                "8",
                "8",
                "--repeats",
                "2",
                "--num-images",
                "2",
            ]
        )
        == 0
    )
    rows = read_csv(out / "results.csv")
    assert set(rows) == {"bilinear", "nearest"}
    records = [json.loads(p.read_text()) for p in sweep.rglob("results.json")]
    for upsampler, row in rows.items():
        mine = [r for r in records if r["choices"]["upsampler"] == upsampler]
        assert row["runs"] == "2 finished"
        for source in ("metrics", "best_metrics"):
            values = [r[source]["test/mIoU"] for r in mine]
            assert float(row[f"{source}:test/mIoU:mean"]) == pytest.approx(statistics.fmean(values))
            assert float(row[f"{source}:test/mIoU:std"]) == pytest.approx(statistics.stdev(values))
            assert row[f"{source}:test/mIoU:n"] == "2"
    grid = out / "predictions_synthetic.png"
    assert grid.read_bytes().startswith(b"\x89PNG") and grid.stat().st_size > 5000
    for name in ("learning_curves.png", "comparisons.csv"):
        assert (out / name).stat().st_size > 100, name
    # Comparisons: paired by seed, A - B, from the runs' own best-checkpoint numbers.
    with (out / "comparisons.csv").open(newline="") as f:
        comparisons = list(csv.DictReader(f))
    assert {c["metric"] for c in comparisons} >= {"test/mIoU", "test/bIoU", "test/thin_recall"}
    miou = next(c for c in comparisons if c["metric"] == "test/mIoU")
    by_seed = {
        (r["choices"]["upsampler"], r["seed"]): r["best_metrics"]["test/mIoU"] for r in records
    }
    diffs = [by_seed[miou["method_a"], s] - by_seed[miou["method_b"], s] for s in (0, 1)]
    assert miou["n_pairs"] == "2"
    assert float(miou["mean_diff"]) == pytest.approx(statistics.fmean(diffs))
    assert float(miou["ci_low"]) <= float(miou["mean_diff"]) <= float(miou["ci_high"])
    assert float(miou["p_adjusted"]) >= float(miou["p_value"])
    assert miou["significant"] in ("true", "false")
    # Two epochs each: the converged flag compares epoch 2 with epoch 1 of every run's CSV log.
    with (out / "runs.csv").open(newline="") as f:
        flags = {(r["upsampler"], r["seed"]): r["converged"] for r in csv.DictReader(f)}
    for record in records:
        log = next(Path(record["output_dir"]).glob("csv/version_*/metrics.csv"))
        with log.open(newline="") as f:
            curve = [float(line["val/mIoU"]) for line in csv.DictReader(f) if line["val/mIoU"]]
        assert len(curve) == 2
        expected = curve[1] - curve[0] <= 0.005
        assert flags[record["choices"]["upsampler"], str(record["seed"])] == str(expected)


def test_collapsed_runs_are_flagged_and_counted(tmp_path):
    """A run whose every class but one has IoU < 1 % predicts one class everywhere: runs.csv
    flags it and the summary's caption counts it. A run that misses one class of several is
    named with the class (runs.csv: missed_classes)."""
    root = tmp_path / "runs"
    write_runs(
        root,
        [("bilinear", 0, "finished"), ("bilinear", 1, "finished"), ("bilinear", 2, "finished")],
    )
    lost = root / "multirun" / "resnet" / "2" / "results.json"
    record = json.loads(lost.read_text())
    record["best_metrics"] |= {
        "test/IoU_background": 0.95, "test/IoU_curve": 0.004, "test/IoU_blob": 0.6,
    }  # fmt: skip
    lost.write_text(json.dumps(record))
    collapsed = root / "multirun" / "resnet" / "1" / "results.json"
    record = json.loads(collapsed.read_text())
    record["best_metrics"] |= {"test/IoU_background": 0.95, "test/IoU_curve": 0.0}
    collapsed.write_text(json.dumps(record))
    healthy = root / "multirun" / "resnet" / "0" / "results.json"
    record = json.loads(healthy.read_text())
    record["best_metrics"] |= {"test/IoU_background": 0.95, "test/IoU_curve": 0.3}
    healthy.write_text(json.dumps(record))
    table = build_table([root])
    assert table.rows[0].collapsed == 1
    caption = summary_markdown(table)
    assert "1 of 3 finished runs predict a single class everywhere" in caption
    assert "; 1 misses a class (test IoU < 1 %): bilinear seed 2 (curve) (runs.csv)." in caption
    header, runs = table.run_rows()
    assert [run[header.index("collapsed")] for run in runs] == [False, True, False]
    assert [run[header.index("missed_classes")] for run in runs] == ["", "curve", "curve"]
    # None missed: the caption says so.
    record["best_metrics"]["test/IoU_curve"] = 0.2
    lost.write_text(json.dumps(record))
    assert "none misses a class" in summary_markdown(build_table([root]))
