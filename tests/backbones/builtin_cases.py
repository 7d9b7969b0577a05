"""The built-in backbone variants every generic test runs on (tiny widths for speed)."""

from __future__ import annotations

from upbench.backbones.inception import Inception
from upbench.backbones.mobilenet import MobileNet
from upbench.backbones.resnet import ResNet

FAMILIES = {
    "resnet_v1_basic": (ResNet, {"block": "basic", "preact": False}),
    "resnet_v2_bottleneck": (ResNet, {"block": "bottleneck", "preact": True}),
    "inception": (Inception, {}),
    "mobilenet_v1": (MobileNet, {"version": 1}),
    "mobilenet_v2": (MobileNet, {"version": 2, "expand_ratio": 2}),
}


def build(family: str, **kwargs):
    cls, options = FAMILIES[family]
    return cls(**{"width": 4, **options, **kwargs})
