"""``results.json``: the per-run record that the table builder reads.

Schema (all keys always present)::

    {
      "status": "running" | "finished" | "interrupted" | "failed",
      "error": null | "<message>",
      "choices": {"backbone": ..., "upsampler": ..., "decoder": ..., "data": ...},
      "seed": int,
      "metrics": {"val/mIoU": ..., "test/mIoU": ..., ...},        # final weights
      "best_metrics": {"test/mIoU": ..., ...},                      # best-validation checkpoint
      "params": {"total": int, "upsampler": int},
      "wall_time_s": float,                                         # all segments if resumed
      "output_dir": str,
      "config": {...}                                               # resolved config
    }
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

RESULTS_FILE = "results.json"

# Beside results.json: the predicted classes of the first test images, so that the report's
# prediction grid needs no checkpoint (a committed sweep, experiments/runs/, has none).
PREDICTIONS_FILE = "predictions.pt"
PREDICTED_IMAGES = 4


def _clean(value: Any) -> Any:
    """Tensors and numpy scalars -> floats; NaN/inf -> None so the file stays valid JSON."""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def write_results(output_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write atomically: a crash mid-write never leaves a truncated ``results.json``."""
    path = Path(output_dir) / RESULTS_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_clean(record), indent=2, sort_keys=True))
    os.replace(tmp, path)
    return path


def read_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    return json.loads(path.read_text())


# Keys that say where and how a run ran, or what it is filed under, not what it trained: a
# committed sweep (experiments/runs/) is continued on other machines, with its data elsewhere, and
# one table's jobs can be another's (upsamplers_x_backbones' ResNet rows are upsamplers_resnet's
# 16-epoch build).
NOT_RECIPE = (
    "paths", "logger", "resume", "ckpt_path", "num_threads", "data.root", "task_name", "tags",
)  # fmt: skip
ABSENT = "<absent>"


def _flat(node: Any, prefix: str = "") -> dict[str, Any]:
    """``{"trainer.max_epochs": 20, ...}`` for a nested dict."""
    if not isinstance(node, dict):
        return {prefix: node}
    return {
        flat_key: leaf
        for key, value in node.items()
        for flat_key, leaf in _flat(value, f"{prefix}.{key}" if prefix else str(key)).items()
    }


def recipe_of(config: dict[str, Any]) -> dict[str, Any]:
    """A resolved run config (a record's ``config``), flat (``trainer.max_epochs``), without
    :data:`NOT_RECIPE`, and with its own output directory written as ``<output_dir>`` wherever a
    path contains it."""
    output_dir = str(config["paths"]["output_dir"])
    recipe = {}
    for key, value in _flat(config).items():
        if any(key == skip or key.startswith(f"{skip}.") for skip in NOT_RECIPE):
            continue
        recipe[key] = value.replace(output_dir, "<output_dir>") if isinstance(value, str) else value
    return recipe


def recipe_diff(first: dict[str, Any], second: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (value in first, value in second)}`` for each recipe key where two resolved run
    configs differ (:data:`ABSENT` where one lacks the key)."""
    a, b = recipe_of(first), recipe_of(second)
    return {
        key: (a.get(key, ABSENT), b.get(key, ABSENT))
        for key in sorted(a.keys() | b.keys())
        if a.get(key, ABSENT) != b.get(key, ABSENT)
    }


def recipe_changes(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``key=old there, new now`` for each recipe key where two resolved run configs differ."""
    changed = recipe_diff(recorded, current)
    return [f"{key}={old} there, {new} now" for key, (old, new) in changed.items()]


def write_predictions(output_dir: str | Path, predictions: Tensor, weights: str) -> Path:
    """``predictions.pt``: ``{"predictions": uint8 (N, H, W) class ids of the first N test images,
    "weights": "best" | "final"}`` (which weights predicted them)."""
    path = Path(output_dir) / PREDICTIONS_FILE
    torch.save({"predictions": predictions.to(torch.uint8).cpu(), "weights": weights}, path)
    return path


def read_predictions(output_dir: str | Path) -> dict[str, Any] | None:
    path = Path(output_dir) / PREDICTIONS_FILE
    return torch.load(path, weights_only=True) if path.is_file() else None


@contextmanager
def recording(
    output_dir: str | Path, record: dict[str, Any], write: bool = True, spent_s: float = 0.0
) -> Iterator[dict]:
    """The lifecycle of a run's record: written as ``running`` on entry, then ``finished`` when
    the block completes, ``interrupted`` on Ctrl-C or a Lightning shutdown (SystemExit), else
    ``failed`` with the error; ``wall_time_s`` is the block's time plus ``spent_s``, the time of
    the earlier segments of a resumed run. The exception propagates. ``write=False`` keeps the
    record in memory only (DDP ranks other than 0)."""
    start = time.perf_counter()
    record["status"] = "running"
    if write:
        write_results(output_dir, record)
    try:
        yield record
    except BaseException as error:
        # Lightning turns SIGINT into SystemExit(1) and SIGTERM into SIGTERMException(SystemExit).
        interrupted = isinstance(error, KeyboardInterrupt | SystemExit)
        record["status"] = "interrupted" if interrupted else "failed"
        record["error"] = f"{type(error).__name__}: {error}"
        raise
    else:
        record["status"] = "finished"
    finally:
        record["wall_time_s"] = spent_s + time.perf_counter() - start
        if write:
            write_results(output_dir, record)
