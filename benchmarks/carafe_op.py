"""CARAFE reassembly: the lean op of upbench.ops.carafe vs the naive output-resolution unfold.

The naive version (below) is the usual pure-PyTorch CARAFE: unfold the k x k windows at input
resolution, nearest-upsample them to (N, C*k^2, s*H, s*W), contract with the masks. The lean op
splits the output into its s^2 sub-pixel phases and accumulates k^2 input-resolution products
per phase, with a hand-written backward that saves only the (padded) features and the masks.

For each shape it reports the best time of the forward pass (under no_grad) and of forward +
backward (gradients w.r.t. features and masks), and the peak memory of each, with ratios lean /
naive. Both ops are checked to agree before timing.

Peak memory, CPU: torch.profiler(profile_memory=True) receives every allocation and free of the
CPU allocator (size and address) during the measured region; replaying them in time order, with
frees counted only for blocks allocated inside the region, gives the bytes that the region holds
at each moment, and its maximum is the peak (inputs and anything allocated before the region are
excluded; outputs, saved tensors and gradients are included).
CUDA: torch.cuda.max_memory_allocated() minus the memory allocated before the region.
Memory is measured in its own run, apart from the timed runs, since profiling slows them.

    python benchmarks/carafe_op.py            # N=2, C=256: 64->128 (x2), 32->128 (x4), ...
    python benchmarks/carafe_op.py --quick    # tiny shapes, seconds, for CI
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from upbench.ops.carafe import carafe


def carafe_naive(
    features: Tensor, masks: Tensor, kernel_size: int, group_size: int, scale_factor: int
) -> Tensor:
    """Reference CARAFE through an (N, C*k^2, s*H, s*W) unfold tensor (same semantics)."""
    n, c, h, w = features.shape
    k, s, g = kernel_size, scale_factor, group_size
    windows = F.unfold(features, k, padding=k // 2).view(n, c * k * k, h, w)
    windows = F.interpolate(windows, scale_factor=s, mode="nearest")
    windows = windows.view(n, g, c // g, k * k, s * h, s * w)
    out = torch.einsum("ngcthw,ngthw->ngchw", windows, masks.view(n, g, k * k, s * h, s * w))
    return out.reshape(n, c, s * h, s * w)


OPS = {"naive": carafe_naive, "lean": carafe}


@dataclass(frozen=True)
class Shape:
    n: int
    c: int
    h: int
    w: int
    k: int
    groups: int
    s: int

    def __str__(self) -> str:
        return (
            f"N={self.n} C={self.c} {self.h}x{self.w}->{self.s * self.h}x{self.s * self.w} "
            f"k={self.k} G={self.groups}"
        )


FULL = [
    Shape(2, 256, 64, 64, 5, 1, 2),
    Shape(2, 256, 64, 64, 5, 4, 2),
    Shape(2, 256, 32, 32, 5, 1, 4),
    Shape(2, 256, 96, 96, 5, 1, 2),
]
QUICK = [Shape(1, 8, 8, 8, 3, 1, 2), Shape(1, 8, 6, 5, 5, 2, 4)]


def make_inputs(shape: Shape, device: torch.device) -> tuple[Tensor, Tensor]:
    gen = torch.Generator(device=device).manual_seed(0)
    features = torch.randn(shape.n, shape.c, shape.h, shape.w, generator=gen, device=device)
    taps = shape.k * shape.k
    size = (shape.s * shape.h, shape.s * shape.w)
    logits = torch.randn(shape.n, shape.groups, taps, *size, generator=gen, device=device)
    masks = logits.softmax(2).view(shape.n, shape.groups * taps, *size)
    return features, masks


def run_once(op: Callable, shape: Shape, features: Tensor, masks: Tensor, backward: bool) -> None:
    args = (shape.k, shape.groups, shape.s)
    if not backward:
        with torch.no_grad():
            op(features, masks, *args)
        return
    features.grad = masks.grad = None
    out = op(features, masks, *args)
    out.backward(torch.ones_like(out))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_seconds(runs: dict[str, Callable[[], None]], device: torch.device, repeats: int):
    """Fastest of ``repeats`` timed calls of each run, the runs interleaved so that load from
    other processes on a shared machine hits all of them alike (the minimum is the least
    disturbed call)."""
    for run in runs.values():
        run()  # warm-up: allocator, first-call dispatch
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            sync(device)
            start = time.perf_counter()
            run()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: min(t) for name, t in times.items()}


def peak_bytes(run: Callable[[], None], device: torch.device) -> int:
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        run()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    activities = [torch.profiler.ProfilerActivity.CPU]
    with torch.profiler.profile(activities=activities, profile_memory=True) as prof:
        run()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    memory = [e for e in events if e.get("name") == "[memory]" and e["args"]["Device Type"] == 0]
    # Frees of blocks allocated before the region (e.g. last call's .grad) are not ours.
    inside: dict[int, int] = {}
    live = peak = 0
    for event in sorted(memory, key=lambda e: (e["ts"], e["args"]["Ev Idx"])):
        addr, nbytes = event["args"]["Addr"], event["args"]["Bytes"]
        if nbytes > 0:
            inside[addr] = nbytes
        elif addr in inside:
            nbytes = -inside.pop(addr)
        else:
            continue
        live += nbytes
        peak = max(peak, live)
    return peak


def check_agreement(shape: Shape, features: Tensor, masks: Tensor) -> None:
    args = (shape.k, shape.groups, shape.s)
    with torch.no_grad():
        torch.testing.assert_close(
            carafe(features, masks, *args), carafe_naive(features, masks, *args)
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes, one repeat (CI)")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed runs per cell (the fastest is kept)"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op CPU threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shapes, repeats = (QUICK, 1) if args.quick else (FULL, args.repeats)
    print(f"device={device} threads={torch.get_num_threads()} torch={torch.__version__}")
    header = (
        f"{'shape':44} {'pass':8} {'op':6} {'time ms':>10} {'peak MiB':>10} "
        f"{'t/naive':>8} {'mem/naive':>9}"
    )
    print(header)
    print("-" * len(header))
    for shape in shapes:
        features, masks = make_inputs(shape, device)
        check_agreement(shape, features, masks)
        features.requires_grad_()
        masks.requires_grad_()
        for backward in (False, True):
            runs = {
                name: partial(run_once, op, shape, features, masks, backward)
                for name, op in OPS.items()
            }
            seconds = best_seconds(runs, device, repeats)
            results = {name: (seconds[name], peak_bytes(run, device)) for name, run in runs.items()}
            base_t, base_m = results["naive"]
            for name, (t, m) in results.items():
                print(
                    f"{str(shape):44} {'fwd+bwd' if backward else 'fwd':8} {name:6} "
                    f"{1e3 * t:10.1f} {m / 2**20:10.1f} {t / base_t:8.2f} {m / base_m:9.3f}"
                )


if __name__ == "__main__":
    main()
