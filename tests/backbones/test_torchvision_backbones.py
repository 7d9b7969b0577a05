"""torchvision networks as feature pyramids: strides and channels, no pooling indices, and
pretrained weights read only from torchvision's cache (never downloaded)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from upbench.backbones.torchvision_models import TorchvisionBackbone, _replace_first_conv

# Channels at strides 2..32, from the architectures' papers / torchvision definitions.
CHANNELS = {
    "resnet18": [64, 64, 128, 256, 512],
    "resnet50": [64, 256, 512, 1024, 2048],
    "googlenet": [64, 192, 480, 832, 1024],
    "mobilenet_v2": [16, 24, 32, 96, 1280],
    "mobilenet_v3_large": [16, 24, 40, 112, 960],
}


@pytest.mark.parametrize("name", CHANNELS)
def test_strides_and_channels_match_forward(name):
    net = TorchvisionBackbone(name)
    assert net.strides == [2, 4, 8, 16, 32]
    assert net.out_channels == CHANNELS[name]
    assert net.provides_pool_indices is False
    # The construction-time probe runs in eval mode: BN statistics untouched.
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(int(bn.num_batches_tracked) == 0 for bn in bns) and net.training
    with torch.no_grad():
        features, indices = net(torch.randn(1, 3, 64, 64))
    assert indices == [None] * 5
    for f, c, s in zip(features, net.out_channels, net.strides, strict=True):
        assert f.shape == (1, c, 64 // s, 64 // s)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    """torch.hub's directory in an empty TORCH_HOME; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)

    def no_download(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "hub" / "checkpoints"


def _expected_file(name: str, checkpoints) -> str:
    url = torchvision.models.get_model_weights(name).DEFAULT.url
    return checkpoints / url.rsplit("/", 1)[-1]


@pytest.mark.parametrize("name", CHANNELS)
def test_missing_pretrained_weights_raise_naming_file_and_directory(name, empty_torch_home):
    path = _expected_file(name, empty_torch_home)
    with pytest.raises(FileNotFoundError) as err:
        TorchvisionBackbone(name, pretrained=True)
    message = str(err.value)
    assert path.name in message and str(empty_torch_home) in message
    assert "backbone.pretrained=false" in message and "copy it to" in message


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("resnet18", lambda: torchvision.models.resnet18()),
        # The real googlenet checkpoint carries the auxiliary heads the backbone drops.
        ("googlenet", lambda: torchvision.models.googlenet(aux_logits=True, init_weights=False)),
    ],
)
def test_pretrained_weights_load_from_the_cache(name, reference, empty_torch_home):
    torch.manual_seed(0)
    state = reference().state_dict()
    path = _expected_file(name, empty_torch_home)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    net = TorchvisionBackbone(name, pretrained=True)
    loaded = net.body.state_dict()
    assert len(loaded) > 10
    for key, value in loaded.items():
        assert torch.equal(value, state[key]), key


def test_a_checkpoint_of_another_model_is_refused(empty_torch_home):
    path = _expected_file("resnet18", empty_torch_home)
    path.parent.mkdir(parents=True)
    torch.save({}, path)
    with pytest.raises(RuntimeError, match="is not a resnet18 checkpoint"):
        TorchvisionBackbone("resnet18", pretrained=True)


@pytest.mark.parametrize("in_channels", [1, 6])
def test_first_conv_adapted_to_in_channels_keeps_constant_image_response(in_channels):
    torch.manual_seed(0)
    model = torchvision.models.resnet18()
    rgb_conv = model.conv1
    _replace_first_conv(model, in_channels)
    assert model.conv1.in_channels == in_channels
    with torch.no_grad():
        torch.testing.assert_close(
            model.conv1(torch.ones(1, in_channels, 9, 9)), rgb_conv(torch.ones(1, 3, 9, 9))
        )


def test_in_channels_backbone_runs():
    net = TorchvisionBackbone("mobilenet_v3_large", in_channels=1)
    features, _ = net(torch.randn(2, 1, 32, 32))
    assert [f.shape[1] for f in features] == CHANNELS["mobilenet_v3_large"]


def test_unknown_name_lists_the_choices():
    with pytest.raises(ValueError, match="choose one of"):
        TorchvisionBackbone("vgg16")
