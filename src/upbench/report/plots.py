"""Figures of the report: accuracy vs cost scatter plots and a grid of qualitative predictions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: the report runs on headless machines and in CI

import hydra  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from upbench.data.base import colorize  # noqa: E402
from upbench.model import SegmentationModel, build_model  # noqa: E402
from upbench.report.table import ReportTable, Row, varying_groups  # noqa: E402
from upbench.results import PREDICTED_IMAGES, PREDICTIONS_FILE, read_predictions  # noqa: E402

ACCURACY = "test/mIoU"


def _series(row: Row, varying: Sequence[str]) -> str | None:
    """This row's values of the ``varying`` groups (those besides the upsampler that vary across
    the table, e.g. its backbone), or None when only the upsampler varies."""
    return " / ".join(row.choices[group] for group in varying) if varying else None


def _label(row: Row, varying: Sequence[str]) -> str:
    """The upsampler's name, qualified by whatever else varies across the table."""
    series = _series(row, varying)
    return row.choices["upsampler"] + (f" / {series}" if series else "")


def _accuracy(row: Row) -> tuple[float, float, str] | None:
    """(mean, std, source) of the best-val checkpoint's mIoU, else of the final weights'."""
    for source, label in (("best_metrics", "best-val ckpt"), ("metrics", "final weights")):
        stat = row.cells.get((source, ACCURACY))
        if stat is not None:
            return stat.mean, stat.std or 0.0, label
    return None


def scatter_plots(table: ReportTable, out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """accuracy_vs_latency.png (profiled forward latency) and accuracy_vs_params.png (upsampler
    parameters in the trained network); one point per row, error bar = seed std."""
    out_dir = Path(out_dir)
    points = [(row, acc) for row in table.rows if (acc := _accuracy(row)) is not None]
    if not points:
        return [], ["plots skipped: no finished run with a test/mIoU"]
    written, notes = [], []
    axes_specs = [
        (
            "accuracy_vs_params.png",
            "upsampler parameters in the network",
            lambda row: row.finished[0]["params"].get("upsampler"),
        )
    ]
    if table.profiles:
        first = next(iter(table.profiles.values()))
        axes_specs.append(
            (
                "accuracy_vs_latency.png",
                f"upsampler forward latency (ms) at {tuple(first['shape'])} "
                f"x{first['scale']} on {first['device']}",
                lambda row: (table.profiles.get(row.choices["upsampler"]) or {}).get(
                    "latency_fwd_ms"
                ),
            )
        )
    else:
        notes.append("accuracy_vs_latency.png skipped: no profile (--no-profile)")
    # With a second varying group (e.g. backbones), one colour per value of it, named in a
    # legend, and points labelled by upsampler only, so 30 points stay readable.
    varying = varying_groups(table.rows)
    series = sorted({s for row, _ in points if (s := _series(row, varying)) is not None})
    colours = {name: f"C{i % 10}" for i, name in enumerate(series)}
    for filename, xlabel, x_of in axes_specs:
        fig, ax = plt.subplots(figsize=(7, 5) if series else (6, 4.5))
        sources, legend = set(), {}
        for row, (mean, std, source) in points:
            x = x_of(row)
            if x is None:
                continue
            sources.add(source)
            name = _series(row, varying)
            bar = ax.errorbar(
                x, 100 * mean, yerr=100 * std, fmt="o", capsize=4, color=colours.get(name)
            )
            if name is not None:
                legend.setdefault(name, bar)
            ax.annotate(
                row.choices["upsampler"],
                (x, 100 * mean),
                textcoords="offset points",
                xytext=(5, 5),
                fontsize=8,
            )
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"test mIoU (%) [{', '.join(sorted(sources))}], mean ± std over seeds")
        if legend:
            ax.legend(legend.values(), legend.keys(), title="/".join(varying))
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written, notes


def _checkpoint(record: Mapping[str, Any]) -> Path | None:
    # Beside the results.json that was read, not at the recorded output_dir: a committed sweep
    # (experiments/runs/) is read from wherever it was cloned.
    directory = Path(record["_path"]).parent / "checkpoints"
    for name in ("best.ckpt", "last.ckpt"):
        if (directory / name).is_file():
            return directory / name
    return None


def load_network(
    record: Mapping[str, Any], num_classes: int, checkpoint: Path
) -> SegmentationModel:
    """Rebuild a run's network from its recorded config and load its weights from a Lightning
    checkpoint (the task's ``model.`` entries), for inference only."""
    network = build_model(record["config"], num_classes)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    prefix = "model."
    network.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return network.eval()


def _saved_predictions(record: Mapping[str, Any], count: int) -> dict[str, Any] | None:
    """The run's predictions.pt when it holds at least ``count`` images."""
    saved = read_predictions(Path(record["_path"]).parent)
    return saved if saved is not None and len(saved["predictions"]) >= count else None


def _can_predict(record: Mapping[str, Any], count: int) -> bool:
    return _saved_predictions(record, count) is not None or _checkpoint(record) is not None


def _predicted(
    record: Mapping[str, Any], batch: Mapping[str, Tensor], num_classes: int
) -> tuple[Tensor, str]:
    """(N, H, W) classes of ``batch`` and which weights predicted them: from the run's
    predictions.pt, else from its checkpoint (a run recorded before runs wrote predictions, or a
    grid of more images than it holds)."""
    count = len(batch["image"])
    saved = _saved_predictions(record, count)
    if saved is not None:
        return saved["predictions"][:count].long(), saved["weights"]
    checkpoint = _checkpoint(record)
    network = load_network(record, num_classes, checkpoint)
    with torch.no_grad():
        return network(batch["image"]).argmax(dim=1), checkpoint.stem


def _display_image(image: Tensor) -> Tensor:
    """(C, H, W) normalised image -> (H, W, 3) in [0, 1] for imshow."""
    image = image[:3] if image.shape[0] >= 3 else image[:1].expand(3, -1, -1)
    lo, hi = image.min(), image.max()
    return ((image - lo) / (hi - lo).clamp_min(1e-6)).permute(1, 2, 0)


def prediction_grids(
    table: ReportTable, out_dir: str | Path, count: int = PREDICTED_IMAGES
) -> tuple[list[Path], list[str]]:
    """predictions_<data>.png per dataset: rows are the first ``count`` test images of the first
    run's data module; columns image, ground truth, then each method's prediction by its first
    finished run that has one (its predictions.pt, written with the best-validation weights, or
    its checkpoint). When another group varies too (e.g. the backbone), one figure per value of
    it, predictions_<data>_<value>.png, so that none grows to dozens of columns."""
    out_dir = Path(out_dir)
    written, notes = [], []
    varying = varying_groups(table.rows)
    others = [group for group in varying if group != "data"]
    by_figure: dict[str, list[tuple[Row, Mapping[str, Any]]]] = {}
    for row in table.rows:
        found = next((r for r in row.finished if _can_predict(r, count)), None)
        if found is None:
            notes.append(
                f"predictions of {'/'.join(row.key)} skipped: no finished run with "
                f"{PREDICTIONS_FILE} of {count} images or checkpoints/{{best,last}}.ckpt"
            )
            continue
        name = "_".join(row.choices[group] for group in ("data", *others))
        by_figure.setdefault(name, []).append((row, found))
    for name, entries in by_figure.items():
        datamodule = hydra.utils.instantiate(entries[0][1]["config"]["data"])
        batch = datamodule.first_test_images(count)
        columns: list[tuple[str, Tensor]] = []
        palette = torch.tensor(datamodule.palette, dtype=torch.uint8)
        for row, record in entries:
            preds, weights = _predicted(record, batch, datamodule.num_classes)
            columns.append(
                (
                    f"{_label(row, varying)}\n({weights})",
                    colorize(preds, palette, datamodule.ignore_index),
                )
            )
        truth = colorize(batch["mask"], palette, datamodule.ignore_index)
        n = len(batch["image"])
        fig, axes = plt.subplots(
            n, 2 + len(columns), figsize=(2 * (2 + len(columns)), 2 * n), squeeze=False
        )
        for i in range(n):
            panels = [("image", _display_image(batch["image"][i])), ("ground truth", truth[i])]
            panels += [(title, colours[i]) for title, colours in columns]
            for j, (title, panel) in enumerate(panels):
                ax = axes[i, j]
                ax.imshow(panel if panel.dtype.is_floating_point else panel.permute(1, 2, 0))
                ax.set_xticks([])
                ax.set_yticks([])
                if i == 0:
                    ax.set_title(title, fontsize=8)
        fig.tight_layout()
        path = out_dir / f"predictions_{name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written, notes
