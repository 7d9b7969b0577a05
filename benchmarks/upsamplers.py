"""Cost of every upsampler relative to bilinear+conv: time (forward, forward+backward) and memory.

Each conf/upsampler/*.yaml is measured with :func:`upbench.profile.profile_all` (built as the
decoder builds it, in = out = C channels, scale x2; latency = median of ``--repeats`` calls
after warm-up; peak memory = CUDA peak during forward+backward, or on CPU the bytes saved for
backward plus the output, see ``upbench.profile``). The reference "bilinear+conv" is
conf/upsampler/resize_conv.yaml with ``mode=bilinear`` (bilinear x2, then a 3x3 conv), profiled
as its own row, so the ``resize_conv`` row's ratio (~1.0) shows the run-to-run noise.

Two shapes: a wide feature map (2, 256, 64, 64) and a decoder-realistic one (8, 64, 32, 32)
(batch 8 at the 32x32 level of a 64 px input with 64 decoder channels).

    python benchmarks/upsamplers.py                 # CPU
    python benchmarks/upsamplers.py --device cuda
    python benchmarks/upsamplers.py --quick         # tiny shapes, for CI
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import OmegaConf

from upbench.profile import (
    load_upsampler_config,
    profile_all,
    profile_upsampler,
    upsampler_names,
)
from upbench.report.format import format_mib, format_ms

REFERENCE = "bilinear+conv"
SHAPES = ((2, 256, 64, 64), (8, 64, 32, 32))
QUICK_SHAPES = ((2, 16, 8, 8), (2, 8, 8, 8))
SCALE = 2
# (column title, profile key, formatter)
MEASURES = (
    ("fwd ms", "latency_fwd_ms", format_ms),
    ("fwd+bwd ms", "latency_fwd_bwd_ms", format_ms),
    ("peak MiB", "peak_memory_bytes", format_mib),
)


def reference_config():
    """conf/upsampler/resize_conv.yaml with its interpolation pinned to bilinear."""
    _, cfg = load_upsampler_config("resize_conv")
    return OmegaConf.merge(cfg, {"mode": "bilinear"})


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return "-"
    return f"{value / reference:.3g}"


def format_table(
    rows: Sequence[Mapping[str, Any]], reference: Mapping[str, Any], shape, device
) -> str:
    """Plain-text table (no terminal-width cropping in logs): value and ratio per measure."""
    header = ["upsampler"]
    for title, _, _ in MEASURES:
        header += [title, "ratio"]
    lines = [[REFERENCE, *_cells(reference, reference)]]
    for row in rows:
        if row["skipped"]:
            lines.append([row["upsampler"], f"skipped: {row['skipped']}"])
        else:
            lines.append([row["upsampler"], *_cells(row, reference)])
    widths = [
        max(len(line[i]) for line in [header, *lines] if i < len(line)) for i in range(len(header))
    ]

    def render(cells: list[str]) -> str:
        if len(cells) == 2 and cells[1].startswith("skipped"):
            return f"{cells[0]:<{widths[0]}}  {cells[1]}"
        return "  ".join(
            f"{cell:<{widths[i]}}" if i == 0 else f"{cell:>{widths[i]}}"
            for i, cell in enumerate(cells)
        )

    n, c, h, w = shape
    title = (
        f"Upsamplers x{SCALE} at input (N={n}, C={c}, H={h}, W={w}) on {device}, "
        f"ratios to {REFERENCE} (conf/upsampler/resize_conv.yaml, mode=bilinear)"
    )
    rule = "-" * len(render(header))
    return "\n".join([title, render(header), rule, *(render(line) for line in lines)])


def _cells(row: Mapping[str, Any], reference: Mapping[str, Any]) -> list[str]:
    cells = []
    for _, key, fmt in MEASURES:
        cells += [fmt(row[key]), ratio(row[key], reference[key])]
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, runs in seconds")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--upsamplers", nargs="+", default=None, help="conf/upsampler names (default: all)"
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but torch.cuda.is_available() is False")
    shapes = SHAPES
    if args.quick:
        shapes, args.repeats, args.warmup = QUICK_SHAPES, 2, 1
    torch.set_num_threads(args.threads)
    names = args.upsamplers or upsampler_names()
    for shape in shapes:
        reference = profile_upsampler(
            reference_config(), shape, SCALE, args.device, args.repeats, args.warmup
        )
        rows = profile_all(names, shape, SCALE, args.device, args.repeats, args.warmup)
        print(format_table(rows, reference, shape, args.device), end="\n\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
