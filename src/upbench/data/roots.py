"""Where a real dataset lives on disk, and early, explicit errors when it is not there.

``data.root`` names the dataset folder itself; when it is ``null`` the folder is
``$UPBENCH_DATA/<subfolder>`` (e.g. ``$UPBENCH_DATA/voc``). upbench never downloads data: a
missing or incomplete folder raises :class:`DatasetRootError` with the expected layout and the
official download address, before any training starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

ENV_VAR = "UPBENCH_DATA"


class DatasetRootError(FileNotFoundError):
    """The dataset is missing or incomplete on disk; the message shows the expected layout."""


def _help(dataset: str, tree: str, url: str) -> str:
    return (
        f"\nExpected layout of the {dataset} folder:\n{tree.rstrip()}\n"
        f"Official download: {url}\n"
        f"upbench never downloads data: fetch it yourself, then set data.root=<folder> or "
        f"{ENV_VAR}=<parent folder>."
    )


def resolve_root(root: str | os.PathLike | None, subfolder: str, tree: str, url: str) -> Path:
    """``root`` if given, else ``$UPBENCH_DATA/<subfolder>``."""
    if root is not None:
        return Path(root).expanduser()
    parent = os.environ.get(ENV_VAR)
    if not parent:
        raise DatasetRootError(
            f"{subfolder}: no data folder configured (data.root is null and {ENV_VAR} is unset)."
            + _help(subfolder, tree, url)
        )
    return Path(parent).expanduser() / subfolder


def require_layout(root: Path, entries: Sequence[str], dataset: str, tree: str, url: str) -> None:
    """Raise unless every relative path in ``entries`` exists under ``root``; a directory entry
    (trailing ``/``) must also be non-empty, so that an interrupted extraction is caught."""
    if not root.is_dir():
        raise DatasetRootError(
            f"{dataset}: data folder {root} does not exist." + _help(dataset, tree, url)
        )
    missing = []
    for entry in entries:
        path = root / entry
        if entry.endswith("/"):
            if not path.is_dir() or next(path.iterdir(), None) is None:
                missing.append(f"{entry} (missing or empty)")
        elif not path.exists():
            missing.append(entry)
    if missing:
        raise DatasetRootError(
            f"{dataset}: data folder {root} is incomplete, missing: {', '.join(missing)}."
            + _help(dataset, tree, url)
        )


def require_files(
    paths: Iterable[str | os.PathLike], dataset: str, root: Path, tree: str, url: str
) -> None:
    """Raise if any file a split lists is absent (a partial download otherwise fails mid-epoch)."""
    missing = [str(p) for p in paths if not os.path.exists(p)]
    if missing:
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        raise DatasetRootError(
            f"{dataset}: data folder {root} is incomplete, {len(missing)} listed files are "
            f"missing: {shown}." + _help(dataset, tree, url)
        )
