"""The segmentation network: backbone -> decoder(upsampler) -> 1x1 classifier head."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import Tensor, nn

from upbench.instantiate import instantiate
from upbench.upsamplers.base import UpsamplerSpec

NETWORK_GROUPS = ("backbone", "decoder", "upsampler")


class SegmentationModel(nn.Module):
    """Encoder-decoder segmenter whose upsampler and backbone are swappable.

    Args:
        backbone: a module following :mod:`upbench.backbones.base` (``out_channels``, ``strides``,
            ``provides_pool_indices``; ``forward`` returns ``BackboneOutput``).
        decoder: factory ``(encoder_channels, encoder_strides, upsampler) -> decoder`` such as
            ``functools.partial(UNetDecoder, skips=True)`` (a ``_partial_`` Hydra node).
        upsampler: Hydra config node or factory for the decoder's upsamplers.
        num_classes: classes of the head.

    ``forward``: (N, C_in, H, W) -> logits (N, num_classes, H, W). Inputs whose size is not a
    multiple of the network's output stride are padded (replicate) and the logits cropped back,
    so any input size works.
    """

    def __init__(
        self,
        backbone: nn.Module,
        decoder: Callable[..., nn.Module],
        upsampler: UpsamplerSpec,
        num_classes: int,
    ):
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder(
            encoder_channels=backbone.out_channels,
            encoder_strides=backbone.strides,
            upsampler=upsampler,
        )
        if self.decoder.uses_pool_indices() and not backbone.provides_pool_indices:
            raise ValueError(
                f"the upsampler needs max-pooling indices but backbone {type(backbone).__name__} "
                "does not provide them: use a built-in backbone (resnet, inception, mobilenet) "
                "with "
                "backbone.downsample=maxpool, or another upsampler"
            )
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)
        self.output_stride = max(backbone.strides)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        s = self.output_stride
        # Always padded (by zero rows when the size fits): no branch on the input size, so that
        # an exported graph with dynamic height and width handles every size.
        x = F.pad(x, (0, (-w) % s, 0, (-h) % s), mode="replicate")
        features, indices = self.backbone(x)
        logits = self.head(self.decoder(features, indices))
        if self.decoder.output_stride > 1:
            # The pyramid heads (SegFormer, FPN) classify at their finest stride and resize the
            # logits, as the papers do.
            logits = F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return logits[..., :h, :w]


def network_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a run's config that defines its network: the backbone, decoder and
    upsampler nodes, as plain (resolved) containers that a checkpoint can store."""
    return {
        group: OmegaConf.to_container(node, resolve=True)
        if OmegaConf.is_config(node := cfg[group])
        else node
        for group in NETWORK_GROUPS
    }


def build_model(cfg: Mapping[str, Any], num_classes: int) -> SegmentationModel:
    """The network of a config (a run's whole config, or :func:`network_config` of it)."""
    return SegmentationModel(
        backbone=instantiate(cfg["backbone"]),
        decoder=instantiate(cfg["decoder"]),
        upsampler=cfg["upsampler"],
        num_classes=num_classes,
    )
