"""Every backbone x every upsampler x every decoder: the model is built from config, runs forward
and backward, and returns logits at the input's spatial size (odd sizes included); combinations
that cannot work are refused when the model is built."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import CONF_DIR, TINY, compose_config, group_options
from upbench.model import build_model
from upbench.upsamplers.base import declaration

BUILTIN = ("resnet", "inception", "mobilenet")
TORCHVISION = [b for b in group_options("backbone") if b not in BUILTIN]
DECLARED = {
    name: declaration(OmegaConf.load(CONF_DIR / "upsampler" / f"{name}.yaml"))
    for name in group_options("upsampler")
}
NEEDS_INDICES = {name for name, declared in DECLARED.items() if declared.needs_pool_indices}
NEEDS_GUIDE = {name for name, declared in DECLARED.items() if declared.needs_guide}
PYRAMID = ("segformer", "fpn")


def _model(tmp_path, backbone: str, upsampler: str, decoder: str, *extra: str):
    overrides = [o for o in TINY if not o.startswith("backbone.")]
    overrides += [f"backbone={backbone}", f"upsampler={upsampler}", f"decoder={decoder}"]
    if backbone in BUILTIN:
        overrides.append("backbone.width=8")
        if upsampler in NEEDS_INDICES:
            overrides.append("backbone.downsample=maxpool")
    elif upsampler not in NEEDS_INDICES:  # mirrored channels are needed to reach the refusal
        overrides.append("decoder.channels=16")
    cfg = compose_config(tmp_path, [*overrides, *extra])  # the case's own overrides win
    return build_model(cfg, num_classes=3)


def _check_forward_backward(model, height: int, width: int) -> None:
    x = torch.randn(2, 3, height, width)
    logits = model(x)
    assert logits.shape == (2, 3, height, width)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("decoder", group_options("decoder"))
@pytest.mark.parametrize("upsampler", group_options("upsampler"))
@pytest.mark.parametrize("backbone", BUILTIN)
def test_builtin_backbone_every_upsampler(tmp_path, backbone, upsampler, decoder):
    if decoder in PYRAMID and upsampler in NEEDS_INDICES:
        with pytest.raises(ValueError, match="use decoder=unet or decoder=segnet"):
            _model(tmp_path, backbone, upsampler, decoder)
        return
    model = _model(tmp_path, backbone, upsampler, decoder)
    _check_forward_backward(model, 32, 32)
    _check_forward_backward(model, 33, 47)  # odd: padded to the output stride, cropped back


@pytest.mark.slow
@pytest.mark.parametrize(
    "upsampler", [u for u in group_options("upsampler") if u not in NEEDS_INDICES]
)
@pytest.mark.parametrize("backbone", TORCHVISION)
def test_torchvision_backbone_every_upsampler(tmp_path, backbone, upsampler):
    if upsampler in NEEDS_GUIDE:
        # The first torchvision feature is strided: the last U-Net step has no guide.
        with pytest.raises(ValueError, match="use decoder=segformer or decoder=fpn"):
            _model(tmp_path, backbone, upsampler, "unet")
        model = _model(tmp_path, backbone, upsampler, "segformer")
    else:
        model = _model(tmp_path, backbone, upsampler, "unet")
    _check_forward_backward(model, 64, 64)


@pytest.mark.parametrize("backbone", TORCHVISION)
def test_maxunpool_refused_without_pooling_indices_torchvision(tmp_path, backbone):
    with pytest.raises(ValueError, match="downsample=maxpool"):
        _model(tmp_path, backbone, "maxunpool", "unet")


@pytest.mark.parametrize("downsample", ["stride", "avgpool"])
def test_maxunpool_refused_without_maxpool_downsampling(tmp_path, downsample):
    with pytest.raises(ValueError, match="downsample=maxpool"):
        _model(tmp_path, "resnet", "maxunpool", "unet", f"backbone.downsample={downsample}")


def test_maxunpool_refused_when_decoder_channels_do_not_mirror(tmp_path):
    with pytest.raises(ValueError, match="decoder.channels=null"):
        _model(tmp_path, "resnet", "maxunpool", "segnet", "decoder.channels=24")


@pytest.mark.parametrize("head_stride", [2, 4])
def test_head_stride_ends_with_one_direct_upsampling(tmp_path, head_stride):
    model = _model(tmp_path, "resnet", "bilinear", "unet", f"decoder.head_stride={head_stride}")
    assert model.decoder.final_scale == head_stride
    assert len(model.decoder.stages) == len(model.backbone.strides) - 1 - {2: 1, 4: 2}[head_stride]
    _check_forward_backward(model, 32, 32)


def test_head_stride_must_be_a_backbone_stride(tmp_path):
    with pytest.raises(ValueError, match="head_stride=3"):
        _model(tmp_path, "resnet", "bilinear", "unet", "decoder.head_stride=3")


def test_stage_scales_follow_backbone_strides_including_dilation(tmp_path):
    model = _model(tmp_path, "resnet", "nearest", "unet", "backbone.dilate_last=1")
    strides = model.backbone.strides
    assert strides[-1] == strides[-2]  # the dilated stage kept the resolution
    factors = [strides[i] // strides[i - 1] for i in range(len(strides) - 1, 0, -1)]
    assert 1 in factors and max(factors) == 2
    assert [stage.upsampler is None for stage in model.decoder.stages] == [f == 1 for f in factors]
    _check_forward_backward(model, 32, 32)


@pytest.mark.parametrize("upsampler", group_options("upsampler"))
def test_every_upsampler_under_bf16_autocast(tmp_path, upsampler):
    """What ``trainer.precision=bf16-mixed`` does to the network: convolutions run in bfloat16
    while the custom ops (CARAFE reassembly, DySample's grid_sample, MaxUnpool) receive
    whichever dtype autocast left them; every one must run forward and backward."""
    model = _model(tmp_path, "resnet", upsampler, "unet")
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.shape == (2, 3, 32, 32) and logits.dtype == torch.bfloat16
    logits.float().square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32, name
        assert torch.isfinite(p.grad).all(), name
