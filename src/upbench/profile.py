"""Profile upsamplers in isolation: parameters, FLOPs, latency and peak memory at one shape.

Usage::

    python -m upbench.profile upsampler=carafe 2 64 32 32 2      # N C H W scale
    python -m upbench.profile upsampler=bilinear,carafe --shape 2 256 64 64 --scale 2
    python -m upbench.profile --all --device cuda                  # every conf/upsampler/*.yaml

Each upsampler is built exactly like the decoder builds it,
``hydra.utils.instantiate(conf/upsampler/NAME.yaml, in_channels=C, out_channels=C, scale=s)``,
and fed an input of shape (N, C, H, W); its output is (N, C, s*H, s*W).

FLOP convention (forward pass only, one multiply-accumulate = 2 FLOPs, as in
:mod:`torch.utils.flop_counter`): convolutions, transposed convolutions and matrix products are
counted by ``FlopCounterMode``. It counts nothing for resampling or normalisation ops, so these
are added by hand (see :data:`HAND_COUNT_NOTES`); pure data movement (nearest interpolation,
pixel shuffle, unfold, max-unpooling, concatenation) is 0, and element-wise ops (bias, BN, ReLU)
are not counted, as is customary in the upsampling papers' FLOP tables.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from upbench.conf import conf_dir as project_conf_dir
from upbench.report.format import format_count, format_mib, format_ms
from upbench.upsamplers.base import Upsampler, build_upsampler, declaration

DEFAULT_SHAPE = (2, 64, 32, 32)
DEFAULT_SCALE = 2

aten = torch.ops.aten

# FLOPs per output element of each resampling op (weights x taps; 1 MAC = 2 FLOPs).
BILINEAR_FLOPS = 8  # 4 taps -> 4 MACs
BICUBIC_FLOPS = 32  # 16 taps -> 16 MACs
# Softmax per input element: max, subtract, exp, sum, divide.
SOFTMAX_FLOPS = 5
# grid_sampler_2d's interpolation_mode argument: 0 bilinear, 1 nearest, 2 bicubic.
_GRID_SAMPLE_FLOPS = {0: BILINEAR_FLOPS, 1: 0, 2: BICUBIC_FLOPS}

HAND_COUNT_NOTES = {
    "upsample_bilinear2d": f"bilinear interpolation {BILINEAR_FLOPS} FLOPs/output element",
    "upsample_bicubic2d": f"bicubic interpolation {BICUBIC_FLOPS} FLOPs/output element",
    "grid_sampler_2d": (
        f"grid_sample {BILINEAR_FLOPS} (bilinear) / {BICUBIC_FLOPS} (bicubic) / 0 (nearest) "
        "FLOPs/output element"
    ),
    "_softmax": f"softmax {SOFTMAX_FLOPS} FLOPs/element",
    "carafe_reassembly": "CARAFE reassembly 2*k_up^2*C*sH*sW FLOPs per image",
    "sapa_similarity": "SAPA similarities 2*m*k_up^2*sH*sW FLOPs per image (m = embedding)",
}


def _per_output_element(flops: int) -> Callable[..., int]:
    def formula(*args: Any, out_shape: Sequence[int], **kwargs: Any) -> int:
        return flops * math.prod(out_shape)

    return formula


def _grid_sample_flops(
    input_shape, grid_shape, interpolation_mode: int, *args: Any, out_shape, **kwargs: Any
) -> int:
    return _GRID_SAMPLE_FLOPS[interpolation_mode] * math.prod(out_shape)


def _softmax_flops(x_shape, *args: Any, out_shape, **kwargs: Any) -> int:
    return SOFTMAX_FLOPS * math.prod(x_shape)


HAND_OP_FORMULAS = {
    aten.upsample_bilinear2d: _per_output_element(BILINEAR_FLOPS),
    aten.upsample_bicubic2d: _per_output_element(BICUBIC_FLOPS),
    aten.grid_sampler_2d: _grid_sample_flops,
    aten._softmax: _softmax_flops,
}


def _declares_flops(module: nn.Module) -> bool:
    return (
        isinstance(module, Upsampler)
        and type(module).analytic_flops is not Upsampler.analytic_flops
    )


class FlopCount:
    """Forward FLOPs of a module: ``FlopCounterMode``'s count plus the hand counts.

    Hand counts are the formulas of :data:`HAND_OP_FORMULAS` (resampling and softmax ops,
    wherever they run) and what each upsampler inside declares with
    :meth:`~upbench.upsamplers.base.Upsampler.analytic_flops` for the shape it is called on.

    Attributes after the ``with`` block:
        counted: FLOPs counted by ``FlopCounterMode`` (convolutions, matrix products).
        hand: ``{term: FLOPs}`` added by the formulas (see ``HAND_COUNT_NOTES``).
        total: ``counted + sum(hand.values())``.
    """

    def __init__(self, module: nn.Module):
        self.module = module
        self.counted = 0
        self.hand: dict[str, int] = {}
        self._mode = FlopCounterMode(display=False, custom_mapping=HAND_OP_FORMULAS)
        self._handles: list[Any] = []

    @property
    def total(self) -> int:
        return self.counted + sum(self.hand.values())

    def _add_declared(self, module: Upsampler, args: tuple) -> None:
        for term, flops in module.analytic_flops(tuple(args[0].shape)).items():
            self.hand[term] = self.hand.get(term, 0) + flops

    def __enter__(self) -> FlopCount:
        for sub in self.module.modules():
            if _declares_flops(sub):
                self._handles.append(sub.register_forward_pre_hook(self._add_declared))
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._mode.__exit__(*exc)
        for handle in self._handles:
            handle.remove()
        by_op = self._mode.get_flop_counts().get("Global", {})
        for op, flops in by_op.items():
            if op in HAND_OP_FORMULAS:
                if flops:
                    name = op.__name__.split(".")[-1]
                    self.hand[name] = self.hand.get(name, 0) + flops
            else:
                self.counted += flops


def upsampler_conf_dir(conf_dir: Path | None = None) -> Path:
    """``conf_dir``, else the project's ``conf/upsampler`` (:func:`upbench.conf.conf_dir`)."""
    return Path(conf_dir) if conf_dir is not None else project_conf_dir() / "upsampler"


def load_upsampler_config(name_or_cfg: str | Mapping, conf_dir: Path | None = None):
    """``"carafe"`` -> ``(name, conf/upsampler/carafe.yaml)``; a config node passes through."""
    if isinstance(name_or_cfg, str):
        conf_dir = upsampler_conf_dir(conf_dir)
        path = conf_dir / f"{name_or_cfg}.yaml"
        if not path.is_file():
            options = ", ".join(upsampler_names(conf_dir))
            raise ValueError(f"no upsampler config {path}; available: {options}")
        return name_or_cfg, OmegaConf.load(path)
    cfg = name_or_cfg if isinstance(name_or_cfg, DictConfig) else OmegaConf.create(name_or_cfg)
    if "_target_" not in cfg:
        raise ValueError(f"an upsampler config needs a _target_, got keys {list(cfg)}")
    return str(cfg._target_).rsplit(".", 1)[-1], cfg


def upsampler_names(conf_dir: Path | None = None) -> list[str]:
    return sorted(p.stem for p in upsampler_conf_dir(conf_dir).glob("*.yaml"))


def upsampler_inputs(
    module: nn.Module, shape: Sequence[int], scale: int, device: torch.device
) -> tuple[tuple, dict]:
    """Positional and keyword inputs of ``module.forward`` for an input of ``shape``."""
    n, c, h, w = shape
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, c, h, w, generator=generator).to(device)
    declared = declaration(module)
    if declared.needs_guide:
        # The guide: an encoder feature at the output size, with as many channels as x.
        return (x, torch.randn(n, c, scale * h, scale * w, generator=generator).to(device)), {}
    if not declared.needs_pool_indices:
        return (x,), {}
    # Max-unpooling reuses the indices of the encoder's 2x2 max-pooling of a (N, C, sH, sW) map.
    pre_pool = torch.randn(n, c, scale * h, scale * w, generator=generator).to(device)
    _, indices = nn.MaxPool2d(2, 2, return_indices=True)(pre_pool)
    return (x, indices), {"output_size": (scale * h, scale * w)}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_latency_ms(
    step: Callable[[], Any], device: torch.device, repeats: int, warmup: int
) -> float:
    """Median wall time of ``step`` in ms, after ``warmup`` untimed calls (GPU: synchronised)."""
    for _ in range(warmup):
        step()
    _synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        _synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


CUDA_MEMORY_METHOD = "CUDA max_memory_allocated during forward+backward, above params and input"
CPU_MEMORY_METHOD = (
    "CPU estimate: tensors saved for backward (unique storages, excluding params and input) "
    "+ output"
)


def saved_activation_bytes(module: nn.Module, args: tuple, kwargs: dict) -> int:
    """Bytes of the forward's output plus the distinct storages autograd saves for backward,
    leaving out parameters and the inputs (resident anyway)."""
    resident = {p.untyped_storage().data_ptr() for p in module.parameters()}
    resident |= {a.untyped_storage().data_ptr() for a in args if isinstance(a, Tensor)}
    saved: dict[int, int] = {}

    def pack(tensor: Tensor) -> Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in resident:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        out = module(*args, **kwargs)
    if out.untyped_storage().data_ptr() not in saved:
        saved[out.untyped_storage().data_ptr()] = out.untyped_storage().nbytes()
    return sum(saved.values())


def profile_upsampler(
    name_or_cfg: str | Mapping,
    shape: Sequence[int] = DEFAULT_SHAPE,
    scale: int = DEFAULT_SCALE,
    device: str | torch.device = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    conf_dir: Path | None = None,
    onnx: bool = False,
) -> dict[str, Any]:
    """Profile one upsampler on an (N, C, H, W) input at ``scale``, with in = out = C channels.

    Returns a dict with ``upsampler``, ``shape``, ``scale``, ``device``, ``params``, ``flops``
    (total), ``flops_counted`` (FlopCounterMode), ``flops_hand`` (``{term: FLOPs}``),
    ``latency_fwd_ms`` and ``latency_fwd_bwd_ms`` (medians), ``peak_memory_bytes`` with
    ``memory_method``, ``latency_ort_ms`` (with ``onnx`` on the CPU: the module exported by
    :func:`upbench.export.export_onnx` at this shape, median ONNX Runtime run with as many
    threads as torch uses; else ``None``), ``latency_segmenter_ms`` and
    ``latency_segmenter_ort_ms`` (with ``onnx``, for an upsampler given by name: the whole
    default segmenter with it, eager and in ONNX Runtime, on
    :data:`upbench.export.SEGMENTER_INPUT`; else ``None``), and ``skipped`` (``None``, or why
    the upsampler cannot run at ``scale``; the measurements are then ``None``).
    """
    if len(shape) != 4 or not all(isinstance(v, int) and v >= 1 for v in shape):
        raise ValueError(f"shape must be four positive ints N C H W, got {list(shape)}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    name, cfg = load_upsampler_config(name_or_cfg, conf_dir)
    device = torch.device(device)
    n, c, h, w = shape
    result: dict[str, Any] = {
        "upsampler": name,
        "shape": list(shape),
        "scale": scale,
        "device": str(device),
        "skipped": None,
        "params": None,
        "flops": None,
        "flops_counted": None,
        "flops_hand": {},
        "latency_fwd_ms": None,
        "latency_fwd_bwd_ms": None,
        "latency_ort_ms": None,
        "latency_segmenter_ms": None,
        "latency_segmenter_ort_ms": None,
        "peak_memory_bytes": None,
        "memory_method": CUDA_MEMORY_METHOD if device.type == "cuda" else CPU_MEMORY_METHOD,
    }
    scales = declaration(cfg).supported_scales(c)
    if scale not in scales:
        result["skipped"] = f"cannot be built at scale {scale} (supports {scales!r})"
        return result
    try:
        module = build_upsampler(cfg, c, c, scale, guide_channels=c)
    except ValueError as error:  # an option the shape does not allow, e.g. DySample's groups
        result["skipped"] = f"cannot be built at scale {scale}: {error}"
        return result
    module = module.to(device)
    result["params"] = sum(p.numel() for p in module.parameters())
    args, kwargs = upsampler_inputs(module, shape, scale, device)

    module.eval()
    with torch.no_grad(), FlopCount(module) as flops:
        out = module(*args, **kwargs)
    if tuple(out.shape) != (n, c, scale * h, scale * w):
        raise RuntimeError(
            f"{name} returned {tuple(out.shape)} for input {tuple(shape)} at scale {scale}; "
            f"expected {(n, c, scale * h, scale * w)}"
        )
    result["flops"] = flops.total
    result["flops_counted"] = flops.counted
    result["flops_hand"] = dict(flops.hand)

    def forward() -> None:
        with torch.no_grad():
            module(*args, **kwargs)

    result["latency_fwd_ms"] = median_latency_ms(forward, device, repeats, warmup)
    if onnx and device.type == "cpu":
        # upbench.export uses this module's timing, hence the import here.
        from upbench.export import SEGMENTER_INPUT, exported_latency_ms, segmenter_latency_ms

        result["latency_ort_ms"] = exported_latency_ms(
            module, args, torch.get_num_threads(), repeats, warmup, kwargs
        )
        if isinstance(name_or_cfg, str):
            eager, ort = segmenter_latency_ms(
                name_or_cfg, SEGMENTER_INPUT, torch.get_num_threads(), repeats, warmup
            )
            result["latency_segmenter_ms"], result["latency_segmenter_ort_ms"] = eager, ort

    module.train()
    x = args[0].detach().requires_grad_(True)
    train_args = (x, *args[1:])
    grad_out = torch.ones_like(out)

    def forward_backward() -> None:
        module(*train_args, **kwargs).backward(grad_out)

    result["latency_fwd_bwd_ms"] = median_latency_ms(forward_backward, device, repeats, warmup)

    module.zero_grad(set_to_none=True)
    x.grad = None
    if device.type == "cuda":
        _synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        forward_backward()
        _synchronize(device)
        result["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device) - base
    else:
        result["peak_memory_bytes"] = saved_activation_bytes(module, train_args, kwargs)
    return result


def profile_all(
    names: Sequence[str | Mapping] | None = None,
    shape: Sequence[int] = DEFAULT_SHAPE,
    scale: int = DEFAULT_SCALE,
    device: str | torch.device = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    conf_dir: Path | None = None,
    onnx: bool = False,
) -> list[dict[str, Any]]:
    """:func:`profile_upsampler` for each of ``names`` (default: every conf/upsampler/*.yaml)."""
    names = list(names) if names is not None else upsampler_names(conf_dir)
    return [
        profile_upsampler(name, shape, scale, device, repeats, warmup, conf_dir, onnx)
        for name in names
    ]


def hand_count_footnote(results: Sequence[Mapping[str, Any]]) -> str:
    """Which rows include hand-counted FLOPs, and with which formula."""
    lines = [
        "FLOPs: forward pass, 1 MAC = 2 FLOPs; convolutions and matrix products counted by "
        "torch.utils.flop_counter; data movement (nearest, pixel shuffle, unfold, unpooling) = 0; "
        "element-wise ops (bias, BN, ReLU) not counted."
    ]
    terms: dict[str, list[str]] = {}
    for result in results:
        for term in result["flops_hand"]:
            terms.setdefault(term, []).append(result["upsampler"])
    for term, rows in terms.items():
        lines.append(f"* hand count in {', '.join(rows)}: {HAND_COUNT_NOTES[term]}.")
    if not terms:
        lines.append("No row needed hand counts.")
    return "\n".join(lines)


def profile_table(results: Sequence[Mapping[str, Any]]) -> Table:
    first = results[0]
    n, c, h, w = first["shape"]
    table = Table(
        title=f"Upsamplers at input (N={n}, C={c}, H={h}, W={w}), scale x{first['scale']}, "
        f"in = out = {c} channels, on {first['device']}",
        caption_justify="left",
    )
    onnx = any(result["latency_ort_ms"] is not None for result in results)
    columns = ["upsampler", "params", "FLOPs", "fwd ms", "fwd+bwd ms", "peak MiB"]
    onnx_columns = ["ORT fwd ms", "segmenter ms", "segmenter ORT ms"]
    for column in columns + (onnx_columns if onnx else []):
        table.add_column(column, justify="left" if column == "upsampler" else "right")
    for result in results:
        if result["skipped"]:
            table.add_row(result["upsampler"], f"skipped: {result['skipped']}")
            continue
        flops = format_count(result["flops"]) + (" *" if result["flops_hand"] else "")
        table.add_row(
            result["upsampler"],
            format_count(result["params"]),
            flops,
            format_ms(result["latency_fwd_ms"]),
            format_ms(result["latency_fwd_bwd_ms"]),
            format_mib(result["peak_memory_bytes"]),
            *(
                [
                    format_ms(result[key])
                    for key in (
                        "latency_ort_ms",
                        "latency_segmenter_ms",
                        "latency_segmenter_ort_ms",
                    )
                ]
                if onnx
                else []
            ),
        )
    table.caption = (
        hand_count_footnote(results)
        + f"\nLatency: median of repeats after warm-up. Peak memory: {first['memory_method']}."
    )
    return table


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m upbench.profile",
        description="Params, FLOPs, latency and peak memory of upsamplers at one input shape.",
    )
    parser.add_argument(
        "positional",
        nargs="*",
        help="upsampler=NAME[,NAME...] and/or N C H W SCALE (five ints)",
    )
    parser.add_argument("--shape", nargs=4, type=int, metavar=("N", "C", "H", "W"))
    parser.add_argument("--scale", type=int)
    parser.add_argument("--all", action="store_true", help="every conf/upsampler/*.yaml")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--conf-dir", type=Path, help="default: conf/upsampler")
    parser.add_argument(
        "--onnx", action="store_true", help="add ONNX Runtime forward latency (CPU)"
    )
    args = parser.parse_args(argv)
    names: list[str] = []
    numbers: list[int] = []
    for token in args.positional:
        if token.startswith("upsampler="):
            names += [name for name in token.split("=", 1)[1].split(",") if name]
        elif token.lstrip("-").isdigit():
            numbers.append(int(token))
        else:
            parser.error(f"unexpected argument {token!r}: use upsampler=NAME or N C H W SCALE")
    if numbers:
        if len(numbers) != 5:
            parser.error(f"give all five of N C H W SCALE, got {numbers}")
        if args.shape or args.scale:
            parser.error("give the shape either positionally or with --shape/--scale, not both")
        args.shape, args.scale = numbers[:4], numbers[4]
    if names and args.all:
        parser.error("--all profiles every upsampler: drop upsampler=... or --all")
    known = upsampler_names(args.conf_dir)
    unknown = [name for name in names if name not in known]
    if unknown:
        parser.error(f"unknown upsampler {', '.join(unknown)}: choose from {', '.join(known)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available here")
    if args.onnx and args.device != "cpu":
        parser.error("--onnx times ONNX Runtime's CPU provider: use it with --device cpu")
    args.names = names or None
    args.shape = tuple(args.shape or DEFAULT_SHAPE)
    args.scale = args.scale or DEFAULT_SCALE
    return args


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = _parse_args(argv)
    results = profile_all(
        args.names,
        args.shape,
        args.scale,
        args.device,
        args.repeats,
        args.warmup,
        args.conf_dir,
        args.onnx,
    )
    Console().print(profile_table(results))
    return results


if __name__ == "__main__":
    main()
