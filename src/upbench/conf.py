"""Where the project's Hydra configs (``conf/``) are, for the commands run as modules."""

from __future__ import annotations

import os
from pathlib import Path

CONF_ENV = "UPBENCH_CONF"


def conf_dir() -> Path:
    """``$UPBENCH_CONF`` if set, else ``./conf``: the ``python -m upbench.*`` commands run from
    the repository root, as ``train.py`` does (whose configs sit next to it)."""
    path = Path(os.environ.get(CONF_ENV) or "conf").resolve()
    if not (path / "config.yaml").is_file():
        raise FileNotFoundError(
            f"no upbench configs at {path}: run the command from the repository root, or set "
            f"{CONF_ENV}=/path/to/upbench/conf"
        )
    return path
