"""The one interface every backbone speaks.

A backbone maps an image (N, C_in, H, W) to a list of feature maps, shallow to deep, and describes
them up front so the decoder can be built before any forward pass:

* ``out_channels[i]`` - channels of ``features[i]``;
* ``strides[i]``      - ``H / features[i].shape[-2]`` for inputs divisible by the output stride
                         (non-decreasing; equal neighbours mean a dilated stage that kept
                         resolution);
* ``provides_pool_indices`` - whether ``indices`` holds SegNet pooling indices.

``indices[i]`` is the index tensor of the ``MaxPool2d(2, 2, return_indices=True)`` that took
``features[i - 1]`` down to the resolution of stage ``i`` (shape of the pooled tensor, i.e.
``out_channels[i - 1]`` channels); ``None`` for ``i == 0`` and wherever the stage did not max-pool.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import Tensor


class BackboneOutput(NamedTuple):
    features: list[Tensor]
    indices: list[Tensor | None]
