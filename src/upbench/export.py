"""Export a segmenter to ONNX and verify it in ONNX Runtime.

Usage::

    python -m upbench.export ckpt=logs/train/runs/<time>/checkpoints/best.ckpt --dynamic
    python -m upbench.export upsampler=carafe backbone=mobilenet --out carafe.onnx   # untrained

A checkpoint rebuilds its own network (``SegmentationTask.load_from_checkpoint``); without one,
the network is built untrained from ``conf/`` with the given overrides, as ``train.py`` would.
The whole segmenter is exported, image (N, C, H, W) in, logits (N, num_classes, H, W) out,
with ``torch.onnx.export(dynamo=True)``; the TorchScript exporter is the fallback when the
dynamo exporter fails. ``--dynamic`` makes the batch, height and width dynamic. The ONNX model
is then run in ONNX Runtime (CPU) on fixed inputs and compared with PyTorch in eval mode; the
command prints the max abs error and fails above ``--tolerance`` (1e-4).
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from torch import Tensor, nn

from upbench.conf import conf_dir
from upbench.evaluate import load_task
from upbench.instantiate import instantiate
from upbench.model import build_model
from upbench.profile import median_latency_ms
from upbench.upsamplers.base import declaration

log = logging.getLogger(__name__)

DEFAULT_OPSET = 18
DEFAULT_TOLERANCE = 1e-4
# The whole-segmenter timing input: a batch of 8 images of 64 x 64 px.
SEGMENTER_INPUT = (8, 3, 64, 64)


@dataclass
class Export:
    """An exported model: its file, the exporter that wrote it, and its check in ONNX Runtime."""

    path: Path
    exporter: str  # "dynamo" or "torchscript"
    max_abs_error: float | None = None
    checked_shapes: tuple[tuple[int, ...], ...] = ()


def _require_onnx() -> None:
    missing = [name for name in ("onnx", "onnxruntime", "onnxscript") if not _importable(name)]
    if missing:
        raise ImportError(
            f"ONNX export needs {', '.join(missing)}: pip install -e '.[deploy]' "
            "(make install includes it)"
        )


def _importable(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def export_onnx(
    model: nn.Module,
    example: Tensor | tuple[Tensor, ...],
    path: str | Path,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
    kwargs: dict[str, Any] | None = None,
) -> Export:
    """Write ``model`` (eval mode) traced on ``example`` to ``path``. A segmenter takes one
    input, named "image", and gives "logits"; a module of several inputs (an upsampler and its
    guide) gets "input0", "input1", ... and ``kwargs`` (e.g. MaxUnpool's output size) are
    constants of the graph. With ``dynamic``, dimensions 0, 2 and 3 of the (single) input are
    dynamic; the example then needs a batch of >= 2, or the exporter takes 1 as a constant."""
    _require_onnx()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.eval()
    args = example if isinstance(example, tuple) else (example,)
    if len(args) == 1:
        input_names, output_names = ["image"], ["logits"]
    else:
        input_names, output_names = [f"input{i}" for i in range(len(args))], ["output"]
    if dynamic and len(args) != 1:
        raise ValueError("dynamic shapes are exported for a single image input only")
    axes = {0: "batch", 2: "height", 3: "width"}
    common = {"input_names": input_names, "output_names": output_names, "opset_version": opset}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                args,
                kwargs=kwargs,
                dynamo=True,
                dynamic_shapes=(axes,) if dynamic else None,
                optimize=True,
                verbose=False,
                **common,
            )
        program.save(str(path))
        return Export(path, "dynamo")
    except Exception as error:  # the exporter's failure modes are many; the fallback is one
        log.warning("dynamo export failed (%s); trying the TorchScript exporter", error)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (*args, kwargs) if kwargs else args,
            str(path),
            dynamo=False,
            dynamic_axes={"image": axes, "logits": axes} if dynamic else None,
            **common,
        )
    return Export(path, "torchscript")


def _session(path: str | Path, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def max_abs_error(model: nn.Module, path: str | Path, inputs: Sequence[Tensor]) -> float:
    """Largest |ONNX Runtime (CPU) - PyTorch eval| over the outputs for ``inputs``."""
    session = _session(path)
    name = session.get_inputs()[0].name
    worst = 0.0
    model = model.eval()
    for x in inputs:
        with torch.no_grad():
            expected = model(x)
        (got,) = session.run(None, {name: x.numpy()})
        worst = max(worst, float((torch.from_numpy(got) - expected).abs().max()))
    return worst


def ort_latency_ms(
    path: str | Path, inputs: Sequence[Tensor], threads: int, repeats: int = 20, warmup: int = 3
) -> float:
    """Median ms of one ONNX Runtime (CPU) run of ``path`` on ``inputs``, after ``warmup``
    untimed runs, with ``threads`` intra-op threads (as many as the PyTorch side uses)."""
    session = _session(path, threads)
    feeds = {node.name: x.numpy() for node, x in zip(session.get_inputs(), inputs, strict=True)}
    for _ in range(warmup):
        session.run(None, feeds)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def largest_intermediate(path: str | Path) -> tuple[str, int]:
    """(name, elements) of the largest tensor the graph computes, from ONNX shape inference
    (a model exported with static shapes; a dynamic dimension counts as unknown and raises)."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)), data_prop=True)
    graph = model.graph
    weights = {init.name for init in graph.initializer}
    best = ("", 0)
    for info in [*graph.value_info, *graph.output]:
        if info.name in weights:
            continue
        dims = info.type.tensor_type.shape.dim
        if any(not d.HasField("dim_value") for d in dims):
            raise ValueError(
                f"{info.name} has a dynamic or unknown shape: export with static shapes"
            )
        numel = 1
        for d in dims:
            numel *= d.dim_value
        best = max(best, (info.name, numel), key=lambda item: item[1])
    return best


def default_segmenter(upsampler: str, overrides: Sequence[str] = ()) -> nn.Module:
    """The default segmenter (``conf/config.yaml``: built-in ResNet, U-Net) with the upsampler
    preset ``upsampler``, untrained (seed 0), in eval mode. A method that needs pooling indices
    gets a max-pooling backbone, which provides them."""
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=[f"upsampler={upsampler}", *overrides])
    if declaration(cfg.upsampler).needs_pool_indices:
        cfg.backbone.downsample = "maxpool"
    torch.manual_seed(0)
    return build_model(cfg, instantiate(cfg.data).num_classes).eval()


def exported_latency_ms(
    module: nn.Module,
    args: Sequence[Tensor],
    threads: int,
    repeats: int = 20,
    warmup: int = 3,
    kwargs: dict[str, Any] | None = None,
) -> float:
    """:func:`ort_latency_ms` of ``module`` exported with static shapes for ``args`` (and
    ``kwargs``) to a temporary file."""
    with tempfile.TemporaryDirectory() as tmp:
        path = export_onnx(module, tuple(args), Path(tmp) / "model.onnx", kwargs=kwargs).path
        return ort_latency_ms(path, args, threads, repeats, warmup)


def segmenter_latency_ms(
    name: str, shape: Sequence[int], threads: int, repeats: int, warmup: int
) -> tuple[float, float]:
    """(eager ms, ORT ms) of :func:`default_segmenter` with upsampler ``name`` on images of
    ``shape``: medians after ``warmup`` runs, ``threads`` CPU threads on both sides."""
    model = default_segmenter(name, [f"data.image_size={shape[-1]}"])
    image = torch.randn(*shape, generator=torch.Generator().manual_seed(0))

    def forward() -> None:
        with torch.no_grad():
            model(image)

    eager = median_latency_ms(forward, torch.device("cpu"), repeats, warmup)
    return eager, exported_latency_ms(model, [image], threads, repeats, warmup)


def verification_inputs(
    example: Tensor, output_stride: int, dynamic: bool, seed: int = 0
) -> list[Tensor]:
    """The example's shape and, when dynamic, another batch and a size that is not a multiple of
    the output stride (the segmenter pads it), both as fixed random images."""
    generator = torch.Generator().manual_seed(seed)
    n, c, h, w = example.shape
    shapes = [(n, c, h, w)]
    if dynamic:
        shapes.append((n + 1, c, h + output_stride + 3, w + 2 * output_stride + 5))
    return [torch.randn(shape, generator=generator) for shape in shapes]


def export_and_verify(
    model: nn.Module,
    example: Tensor,
    path: str | Path,
    dynamic: bool = False,
    opset: int = DEFAULT_OPSET,
) -> Export:
    """:func:`export_onnx`, then :func:`max_abs_error` on :func:`verification_inputs`."""
    exported = export_onnx(model, example, path, dynamic=dynamic, opset=opset)
    inputs = verification_inputs(example, getattr(model, "output_stride", 1), dynamic)
    exported.max_abs_error = max_abs_error(model, exported.path, inputs)
    exported.checked_shapes = tuple(tuple(x.shape) for x in inputs)
    return exported


def _network(ckpt: str | None, overrides: Sequence[str]) -> tuple[nn.Module, int, int]:
    """(network, input channels, image size) of a checkpoint or of the composed config."""
    if ckpt is not None:
        if overrides:
            raise ValueError(
                f"the checkpoint defines the network: drop {' '.join(overrides)} or drop ckpt="
            )
        task = load_task(ckpt)
        data = task.hparams.get("data") or {}
        return task.model, int(data.get("in_channels", 3)), int(data.get("image_size", 64))
    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    datamodule = instantiate(cfg.data)
    model = build_model(cfg, datamodule.num_classes)
    return model, datamodule.in_channels, int(cfg.data.get("image_size", 64))


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m upbench.export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        help="ckpt=PATH, or config overrides of an untrained network (upsampler=carafe ...)",
    )
    parser.add_argument("--out", type=Path, help="the .onnx file (default: next to ckpt)")
    parser.add_argument("--dynamic", action="store_true", help="dynamic batch, height, width")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="example size")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> Export:
    args = _parse_args(argv)
    ckpts = [o.split("=", 1)[1] for o in args.overrides if o.startswith("ckpt=")]
    overrides = [o for o in args.overrides if not o.startswith("ckpt=")]
    try:
        _require_onnx()
        if len(ckpts) > 1:
            raise ValueError("give one ckpt=")
        ckpt = ckpts[0] if ckpts else None
        model, in_channels, image_size = _network(ckpt, overrides)
    except (ValueError, ImportError, OSError, HydraException) as error:
        # ConfigError (a missing or old checkpoint) is a ValueError; an unknown option is Hydra's.
        print(f"Error: {error}", file=sys.stderr)
        sys.exit(2)
    out = args.out or (Path(ckpt).with_suffix(".onnx") if ckpt else Path("model.onnx"))
    height, width = args.size or (image_size, image_size)
    # A batch of 2: the exporter would take a batch of 1 as a constant.
    example = torch.randn(2, in_channels, height, width, generator=torch.Generator().manual_seed(0))
    exported = export_and_verify(model, example, out, dynamic=args.dynamic, opset=args.opset)
    shapes = ", ".join("x".join(map(str, shape)) for shape in exported.checked_shapes)
    print(f"wrote {exported.path} ({exported.exporter} exporter, opset {args.opset}"
          f"{', dynamic batch/height/width' if args.dynamic else ''})")  # fmt: skip
    print(f"ONNX Runtime vs PyTorch: max abs error {exported.max_abs_error:.2e} on {shapes}")
    if exported.max_abs_error > args.tolerance:
        sys.exit(
            f"Error: max abs error {exported.max_abs_error:.2e} > --tolerance {args.tolerance}"
        )
    return exported


if __name__ == "__main__":
    main()
