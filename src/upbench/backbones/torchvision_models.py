"""torchvision classification networks as multi-scale backbones.

The network is cut into a feature pyramid with
:func:`torchvision.models.feature_extraction.create_feature_extractor`, one feature per stride
2, 4, 8, 16, 32 (the deepest node at each stride):

========================  ===================================================================
``resnet18``/``resnet50``  relu, layer1..layer4 (He et al., CVPR 2016)
``googlenet``              conv1, conv3, inception3b, inception4e, inception5b (Szegedy et al.)
``mobilenet_v2``           features.1, .3, .6, .13, .18 (Sandler et al., CVPR 2018)
``mobilenet_v3_large``     features.1, .3, .6, .12, .16 (Howard et al., ICCV 2019)
========================  ===================================================================

Pretrained ImageNet weights are opt-in and never downloaded: the weights file must already be
where torchvision caches it, ``torch.hub.get_dir()/checkpoints/<file name of the weights URL>``.
Pretrained weights expect ImageNet-normalised RGB input.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import Tensor, nn
from torchvision.models import get_model, get_model_weights
from torchvision.models.feature_extraction import create_feature_extractor

from upbench.backbones.base import BackboneOutput
from upbench.validation import positive_int

RETURN_NODES: dict[str, list[str]] = {
    "resnet18": ["relu", "layer1", "layer2", "layer3", "layer4"],
    "resnet50": ["relu", "layer1", "layer2", "layer3", "layer4"],
    "googlenet": ["conv1", "conv3", "inception3b", "inception4e", "inception5b"],
    "mobilenet_v2": ["features.1", "features.3", "features.6", "features.13", "features.18"],
    "mobilenet_v3_large": ["features.1", "features.3", "features.6", "features.12", "features.16"],
}

# Side length of the dummy input that measures channels and strides (a multiple of 32).
_PROBE_SIZE = 64


def weights_path(name: str) -> tuple[Path, str]:
    """Where torchvision's cache keeps the default ImageNet weights of ``name``, and their URL."""
    url = get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path), url


def _require_weights(name: str) -> Path:
    """The cached weights file of ``name``; raises at once, naming file and directory, when it is
    missing (a download would hang offline)."""
    path, url = weights_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"pretrained weights for backbone {name!r} not found: torchvision looks for "
            f"{path.name} in {path.parent} (torch.hub.get_dir()/checkpoints; TORCH_HOME moves "
            f"it). Nothing is downloaded at run time: fetch {url} on a machine with internet "
            f"access and copy it to {path}, or set backbone.pretrained=false."
        )
    return path


def _load_pretrained(model: nn.Module, name: str, path: Path) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    # googlenet's checkpoint also holds the auxiliary classifiers, which the backbone drops.
    missing, _ = model.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"{path} is not a {name} checkpoint: it lacks {missing[:5]} ...")


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """Give the first conv ``in_channels`` inputs, reusing its RGB filters as timm's
    ``adapt_input_conv`` does: summed for one channel, else tiled and scaled by 3 / in_channels
    (the response to a constant image is unchanged for 1 channel and multiples of 3)."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        conv.bias is not None,
    )
    with torch.no_grad():
        if in_channels == 1:
            new.weight.copy_(conv.weight.sum(1, keepdim=True))
        else:
            tiled = conv.weight.repeat(1, math.ceil(in_channels / 3), 1, 1)[:, :in_channels]
            new.weight.copy_(tiled * (3 / in_channels))
        if conv.bias is not None:
            new.bias.copy_(conv.bias)
    parent_name, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent_name), attr, new)


class TorchvisionBackbone(nn.Module):
    """A torchvision network as a backbone following :mod:`upbench.backbones.base`.

    Args:
        name: one of :data:`RETURN_NODES`.
        pretrained: load the ImageNet weights from torchvision's cache (never downloads; raises
            ``FileNotFoundError`` naming the file and directory when they are missing).
        in_channels: input channels; other than 3 replaces the first conv (pretrained RGB
            filters adapted, see :func:`_replace_first_conv`).

    ``forward``: (N, in_channels, H, W) -> :class:`BackboneOutput` with 5 features at strides
    2, 4, 8, 16, 32 and no pooling indices.
    """

    provides_pool_indices = False

    def __init__(self, name: str, pretrained: bool = False, in_channels: int = 3):
        super().__init__()
        if name not in RETURN_NODES:
            raise ValueError(
                f"unknown torchvision backbone {name!r}: choose one of {sorted(RETURN_NODES)}"
            )
        positive_int("backbone.in_channels", in_channels)
        weights_file = _require_weights(name) if pretrained else None
        kwargs = {}
        if name == "googlenet":
            # torchvision's pretrained GoogLeNet re-normalises its input inside forward.
            kwargs = {
                "aux_logits": False,
                "init_weights": not pretrained,
                "transform_input": pretrained and in_channels == 3,
            }
        model = get_model(name, weights=None, **kwargs)
        if weights_file is not None:
            _load_pretrained(model, name, weights_file)
        if in_channels != 3:
            _replace_first_conv(model, in_channels)
        self.name = name
        self.body = create_feature_extractor(
            model, return_nodes={node: str(i) for i, node in enumerate(RETURN_NODES[name])}
        )
        self.out_channels, self.strides = self._probe(in_channels)

    @torch.no_grad()
    def _probe(self, in_channels: int) -> tuple[list[int], list[int]]:
        """Channels and strides from one forward of a small dummy image (eval mode, so the BN
        running statistics stay untouched)."""
        was_training = self.body.training
        self.body.eval()
        features = self.body(torch.zeros(1, in_channels, _PROBE_SIZE, _PROBE_SIZE)).values()
        self.body.train(was_training)
        return [f.shape[1] for f in features], [_PROBE_SIZE // f.shape[-2] for f in features]

    def forward(self, x: Tensor) -> BackboneOutput:
        features = list(self.body(x).values())
        return BackboneOutput(features, [None] * len(features))
