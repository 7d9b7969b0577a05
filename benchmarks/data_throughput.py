"""Does the synthetic data keep up with training? Images/s delivered vs consumed.

Measures, on this machine's CPU threads:
  1. generation: images/s of ``SyntheticDataModule.setup`` (each split is generated once);
  2. delivery: images/s of ``train_dataloader()`` (uint8 -> normalised float batches);
  3. consumption: images/s of a training step (forward, cross-entropy, backward, AdamW) of a
     small U-Net-like segmentation network built here (3 stages, bilinear upsampling), which is
     cheaper than the project's models, so the ratio below is a lower bound.

    python benchmarks/data_throughput.py            # 64 px, batch 16
    python benchmarks/data_throughput.py --quick    # seconds, for CI

Exit status 1 if the delivery / consumption ratio is below --min-ratio (default 5).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from upbench.data.synthetic import MAX_CLASSES, SyntheticDataModule


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class TinySegNet(nn.Module):
    """Encoder (strides 1, 2, 4) + decoder with bilinear x2 upsampling and skip concatenation.
    (N, 3, H, W) -> (N, num_classes, H, W); H, W divisible by 4."""

    def __init__(self, num_classes: int, width: int = 16):
        super().__init__()
        self.enc = nn.ModuleList(
            [conv_block(3, width), conv_block(width, 2 * width), conv_block(2 * width, 4 * width)]
        )
        self.dec = nn.ModuleList([conv_block(6 * width, 2 * width), conv_block(3 * width, width)])
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, x):
        skips = []
        for i, block in enumerate(self.enc):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for block, skip in zip(self.dec, reversed(skips[:-1]), strict=True):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], 1))
        return self.head(x)


def timed_images_per_s(run, images_per_call: int, calls: int) -> float:
    run()  # warm-up: allocator, first-call dispatch
    start = time.perf_counter()
    for _ in range(calls):
        run()
    return images_per_call * calls / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, runs in seconds")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--num-train", type=int, default=1024)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--min-ratio", type=float, default=5.0)
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.num_train, args.steps = 32, 128, 3
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    module = SyntheticDataModule(
        num_train=args.num_train,
        num_val=1,
        num_test=1,
        image_size=args.image_size,
        num_classes=MAX_CLASSES,  # all shape kinds, as the figures in the README were measured
        batch_size=args.batch_size,
        num_workers=args.num_workers,
    )
    start = time.perf_counter()
    module.setup("fit")
    generation = (args.num_train + 1) / (time.perf_counter() - start)

    loader = module.train_dataloader()
    start, delivered = time.perf_counter(), 0
    for batch in loader:
        delivered += len(batch["image"])
    delivery = delivered / (time.perf_counter() - start)

    model = TinySegNet(module.num_classes)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = next(iter(loader))

    def train_step():
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(batch["image"]), batch["mask"], ignore_index=255)
        loss.backward()
        optimizer.step()

    consumption = timed_images_per_s(train_step, len(batch["image"]), args.steps)
    ratio = delivery / consumption

    print(
        f"synthetic data, {args.image_size} px, batch {args.batch_size}, "
        f"{args.num_workers} workers, {args.threads} torch threads"
    )
    rows = [
        ("generation (setup, once per split)", f"{generation:10.0f} img/s"),
        ("delivery (train_dataloader)", f"{delivery:10.0f} img/s"),
        ("consumption (TinySegNet train step)", f"{consumption:10.0f} img/s"),
        ("ratio delivery / consumption", f"{ratio:10.1f} x"),
    ]
    for name, value in rows:
        print(f"  {name:<38}{value}")
    if ratio < args.min_ratio:
        print(f"FAIL: ratio {ratio:.1f} < {args.min_ratio}: the data loader would bottleneck")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
