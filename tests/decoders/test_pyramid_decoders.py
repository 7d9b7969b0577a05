"""The SegFormer head and FPN: the literature's protocol (six x2 upsamplers, guides), the plain
SegFormer head with bilinear, and a training step with the guided methods."""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import TINY, compose_config
from upbench.decoders import FPNDecoder, SegFormerDecoder
from upbench.results import read_results
from upbench.runner import train
from upbench.upsamplers.fade import FADE
from upbench.upsamplers.interpolate import Interpolation

CHANNELS = [8, 16, 24, 32, 40]
STRIDES = [1, 2, 4, 8, 16]


def _features(batch=2, size=32):
    generator = torch.Generator().manual_seed(0)
    return [
        torch.randn(batch, c, size // s, size // s, generator=generator)
        for c, s in zip(CHANNELS, STRIDES, strict=True)
    ]


def test_bilinear_segformer_is_the_plain_head():
    """The official head: project, resize every stage straight to the finest size (bilinear,
    align_corners=False), concatenate deepest first, fuse; written here from the paper."""
    torch.manual_seed(0)
    head = SegFormerDecoder(
        CHANNELS, STRIDES, functools.partial(Interpolation, mode="bilinear"), channels=12
    ).eval()
    features = _features()[1:]
    finest = features[0].shape[-2:]
    projected = [
        F.conv2d(f, lin.weight, lin.bias)
        for f, lin in zip(features, head.project.convs, strict=True)
    ]
    resized = [
        F.interpolate(p, size=finest, mode="bilinear", align_corners=False) for p in projected
    ]
    reference = head.fuse(torch.cat(resized[::-1], dim=1))
    with torch.no_grad():
        torch.testing.assert_close(head(_features(), [None] * 5), reference)
    assert [len(chain) for chain in head.chains] == [0, 1, 1, 1]  # one resize per stage


def _record_calls(decoder):
    """(input, guide) of every upsampler call, in call order, and the projected features."""
    calls = []
    for up in decoder.upsamplers():
        up.register_forward_hook(lambda m, args, out: calls.append((m, args[0], args[1], out)))
    return calls


def test_segformer_protocol_six_guided_x2_steps():
    """Three x2 steps for the deepest stage, two for the next, one for the next (mmseg fork of
    FADE); every step of a guided method sees the projected stage at the stride it reaches."""
    torch.manual_seed(0)
    head = SegFormerDecoder(CHANNELS, STRIDES, functools.partial(FADE), channels=12)
    assert [len(chain) for chain in head.chains] == [0, 1, 2, 3]
    assert all(up.scale == 2 for up in head.upsamplers())
    projected = []
    for linear in head.project.convs:
        linear.register_forward_hook(lambda m, args, out: projected.append(out))
    calls = _record_calls(head)
    head(_features(), [None] * 5)
    assert len(calls) == 6
    by_size = {p.shape[-1]: p for p in projected}
    for _, x, guide, out in calls:
        assert guide is by_size[2 * x.shape[-1]] and out.shape[-1] == 2 * x.shape[-1]


def test_fpn_top_down_guided_by_the_lateral_it_is_added_to():
    torch.manual_seed(0)
    fpn = FPNDecoder(CHANNELS, STRIDES, functools.partial(FADE), channels=12)
    laterals = []
    for lateral in fpn.lateral.convs:
        lateral.register_forward_hook(lambda m, args, out: laterals.append(out))
    calls = _record_calls(fpn)
    out = fpn(_features(), [None] * 5)
    assert out.shape == (2, 12, 16, 16) and fpn.output_stride == 2
    assert len(calls) == 3  # P5 -> P4 -> P3 -> P2
    for (_, _, guide, up), lateral in zip(calls, laterals[-2::-1], strict=True):
        assert guide is lateral and up.shape == lateral.shape
    # The merged map: lateral + upsampled coarser map, checked on the first step.
    merged = fpn.top_down[2][0](laterals[3], laterals[2]) + laterals[2]
    torch.testing.assert_close(calls[1][1], merged)


def test_pyramid_refusals_name_the_fix():
    with pytest.raises(ValueError, match="decoder.num_levels=7.*set decoder.num_levels=4"):
        SegFormerDecoder(CHANNELS, STRIDES, functools.partial(FADE), num_levels=7)
    with pytest.raises(ValueError, match="differ by 3: use decoder=unet"):
        FPNDecoder([8, 16], [2, 6], functools.partial(FADE), num_levels=2)
    with pytest.raises(ValueError, match="no stage at stride 4"):
        SegFormerDecoder([8, 16], [2, 8], functools.partial(FADE), num_levels=2)


@pytest.mark.parametrize(("upsampler", "decoder"), [("fade", "segformer"), ("sapa", "fpn")])
def test_guided_upsampler_trains_in_a_pyramid_decoder(tmp_path, upsampler, decoder):
    """`python train.py upsampler=fade decoder=segformer` (and sapa x fpn), tiny."""
    cfg = compose_config(tmp_path, [*TINY, f"upsampler={upsampler}", f"decoder={decoder}"])
    train(cfg)
    record = read_results(tmp_path)
    assert record["status"] == "finished"
    assert record["choices"]["upsampler"] == upsampler and record["choices"]["decoder"] == decoder
    assert record["params"]["upsampler"] > 0
    assert 0 < record["metrics"]["test/mIoU"] <= 1
