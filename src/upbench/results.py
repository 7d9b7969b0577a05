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
      "wall_time_s": float,
      "output_dir": str,
      "config": {...}                                               # resolved config
    }
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

RESULTS_FILE = "results.json"


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
