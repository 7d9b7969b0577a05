"""Deployed cost: ONNX Runtime (CPU provider) vs eager PyTorch forward time, per upsampler.

Each conf/upsampler/*.yaml is measured twice:

- alone, at the two shapes of benchmarks/upsamplers.py, (2, 256, 64, 64) and (8, 64, 32, 32),
  scale x2, built and fed as ``upbench.profile`` builds and feeds it, and exported with static
  shapes by :func:`upbench.export.export_onnx`;
- inside the whole default segmenter (built-in ResNet, U-Net), on a batch of 8 images of
  64 x 64 px, exported as ``python -m upbench.export`` exports it.

Times are medians after warm-up, in eval mode without autograd, with the same number of CPU
threads on both sides. The ratio is ORT / eager: below 1, the deployed model is faster.

    python benchmarks/deploy.py
    python benchmarks/deploy.py --quick     # tiny shapes and two upsamplers, for CI
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from upbench.export import SEGMENTER_INPUT, exported_latency_ms, segmenter_latency_ms
from upbench.profile import (
    load_upsampler_config,
    median_latency_ms,
    upsampler_inputs,
    upsampler_names,
)
from upbench.report.format import format_ms
from upbench.upsamplers.base import build_upsampler, declaration

SHAPES = ((2, 256, 64, 64), (8, 64, 32, 32))
QUICK_SHAPES = ((2, 16, 8, 8),)
QUICK_SEGMENTER_INPUT = (2, 3, 32, 32)
QUICK_UPSAMPLERS = ("resize_conv", "carafe")
SCALE = 2


def upsampler_latencies(
    name: str, shape: Sequence[int], threads: int, repeats: int, warmup: int
) -> tuple[float, float] | str:
    """(eager ms, ORT ms) of upsampler ``name`` alone on an input of ``shape``, in = out
    channels, or why it cannot run at this scale."""
    _, cfg = load_upsampler_config(name)
    channels = shape[1]
    scales = declaration(cfg).supported_scales(channels)
    if SCALE not in scales:
        return f"cannot be built at scale {SCALE} (supports {scales!r})"
    module = build_upsampler(cfg, channels, channels, SCALE, guide_channels=channels).eval()
    args, kwargs = upsampler_inputs(module, shape, SCALE, torch.device("cpu"))

    def forward() -> None:
        with torch.no_grad():
            module(*args, **kwargs)

    eager = median_latency_ms(forward, torch.device("cpu"), repeats, warmup)
    return eager, exported_latency_ms(module, args, threads, repeats, warmup, kwargs)


def render(title: str, header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *lines]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            f"{cell:<{widths[i]}}" if i == 0 else f"{cell:>{widths[i]}}"
            for i, cell in enumerate(cells)
        )

    return "\n".join([title, line(header), "-" * len(line(header)), *map(line, lines)])


def ratio(ort: float | None, eager: float | None) -> str:
    return "-" if ort is None or not eager else f"{ort / eager:.3g}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, two upsamplers")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads on both sides")
    parser.add_argument("--upsamplers", nargs="+", help="conf/upsampler names (default: all)")
    args = parser.parse_args()
    shapes, segmenter_input = SHAPES, SEGMENTER_INPUT
    names = args.upsamplers or upsampler_names()
    if args.quick:
        shapes, segmenter_input = QUICK_SHAPES, QUICK_SEGMENTER_INPUT
        names = args.upsamplers or list(QUICK_UPSAMPLERS)
        args.repeats, args.warmup = 2, 1
    torch.set_num_threads(args.threads)
    header = ["upsampler", "eager ms", "ORT ms", "ratio"]
    for shape in shapes:
        lines = []
        for name in names:
            measured = upsampler_latencies(name, shape, args.threads, args.repeats, args.warmup)
            if isinstance(measured, str):
                lines.append([name, f"skipped: {measured}", "", ""])
            else:
                eager, ort = measured
                lines.append([name, format_ms(eager), format_ms(ort), ratio(ort, eager)])
        n, c, h, w = shape
        title = (
            f"Deploy: upsampler alone x{SCALE} at (N={n}, C={c}, H={h}, W={w}), "
            f"{args.threads} CPU threads, ratio = ORT / eager"
        )
        print(render(title, header, lines), end="\n\n", flush=True)
    lines = []
    for name in names:
        eager, ort = segmenter_latency_ms(
            name, segmenter_input, args.threads, args.repeats, args.warmup
        )
        lines.append([name, format_ms(eager), format_ms(ort), ratio(ort, eager)])
    n, c, h, w = segmenter_input
    title = (
        f"Deploy: whole segmenter (resnet / unet) on (N={n}, C={c}, H={h}, W={w}), "
        f"{args.threads} CPU threads, ratio = ORT / eager"
    )
    print(render(title, header, lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
