"""What one converged run costs: the training recipe before and after the warm-up + Dice change.

Trains the default model twice through ``train.py`` in this process's machine, one run at a time
(``--threads`` intra-op threads each, default 2, the whole of this project's CPU):

- ``before``: the recipe until 2026-11-30 (pixel cross-entropy, cosine from step 0), given
  ``--before-epochs`` (default 30, three times its old budget);
- ``after``: the current defaults (CE + 2 x Dice, 5 % linear warm-up + cosine, 20 epochs).

For each it reports the wall time of the run (training and the three test passes), whether the run
converged (val mIoU rose by at most 0.5 points over its last 20 % of epochs,
:mod:`upbench.report.curves`), the epoch at which val mIoU first came within 0.5 points of the
run's best, the seconds to that epoch (wall time x epoch / epochs), and the test mIoU of the
best-validation checkpoint. The ratio is after / before of the seconds to the plateau.

    python benchmarks/converged_run.py            # about 10 minutes on 2 CPU threads
    python benchmarks/converged_run.py --quick    # seconds, for CI (tiny data: no meaning)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from upbench.report.curves import RISE_TOLERANCE, is_converged, read_curve

ROOT = Path(__file__).resolve().parents[1]
BEFORE = [
    "loss=ce",
    "scheduler._target_=torch.optim.lr_scheduler.CosineAnnealingLR",
    "~scheduler.warmup_fraction",
]
QUICK = [
    "data.num_train=32",
    "data.num_val=8",
    "data.num_test=8",
    "backbone.width=8",
]


def train(run_dir: Path, overrides: list[str], threads: int) -> dict:
    """One ``train.py`` run in a subprocess (a fresh process per run, as a user runs it)."""
    command = [
        sys.executable,
        "train.py",
        *overrides,
        f"num_threads={threads}",
        "logger=csv",
        f"hydra.run.dir={run_dir}",
    ]
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{proc.stderr[-3000:]}")
    record = json.loads((run_dir / "results.json").read_text())
    curve = read_curve(run_dir)
    best = max(value for _, value in curve)
    plateau_epoch = next(epoch for epoch, value in curve if value >= best - RISE_TOLERANCE) + 1
    return {
        "wall_s": record["wall_time_s"],
        "epochs": len(curve),
        "converged": is_converged(curve),
        "plateau_epoch": plateau_epoch,
        "to_plateau_s": record["wall_time_s"] * plateau_epoch / len(curve),
        "test_mIoU": record["best_metrics"]["test/mIoU"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny data, for CI")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--before-epochs", type=int, default=30)
    args = parser.parse_args()
    extra = QUICK if args.quick else []
    before_epochs = 3 if args.quick else args.before_epochs
    recipes = {
        "before": [*BEFORE, f"trainer.max_epochs={before_epochs}", *extra],
        "after": [*extra, *(["trainer.max_epochs=3"] if args.quick else [])],
    }
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in recipes.items():
            results[name] = train(Path(tmp) / name, overrides, args.threads)
    print(f"Converged run ({args.threads} threads{', quick' if args.quick else ''})")
    print(
        f"{'recipe':<8}{'epochs':>7}{'wall s':>9}{'converged':>11}{'plateau ep':>12}"
        f"{'to plateau s':>14}{'test mIoU':>11}{'ratio':>8}"
    )
    reference = results["before"]["to_plateau_s"]
    for name, r in results.items():
        print(
            f"{name:<8}{r['epochs']:>7}{r['wall_s']:>9.1f}{str(r['converged']):>11}"
            f"{r['plateau_epoch']:>12}{r['to_plateau_s']:>14.1f}{r['test_mIoU']:>11.3f}"
            f"{r['to_plateau_s'] / reference:>8.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
