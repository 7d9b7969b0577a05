"""The upsampler contract: how a decoder builds an upsampler and what it must hand it.

Every upsampler is an ``nn.Module`` built as::

    Upsampler(in_channels, out_channels, scale, **options)                  # plain
    Upsampler(in_channels, out_channels, scale, guide_channels, **options)  # needs_guide

and maps x (N, in_channels, H, W) to (N, out_channels, scale*H, scale*W). A method states on its
class what it needs from the decoder beyond x, and which scales it supports:

- ``needs_pool_indices``: ``forward(x, indices, output_size)`` gets the encoder's 2x2 max-pool
  indices of the level it upsamples to (SegNet's unpooling);
- ``needs_guide``: ``forward(x, guide)`` gets the higher-resolution encoder (or skip) feature at
  the output size, (N, guide_channels, scale*H, scale*W) (FADE, SAPA);
- ``is_interpolation``: a fixed resize without parameters, so a decoder may replace a chain of
  x2 steps by one resize of the whole factor (the plain SegFormer head does);
- ``supported_scales(in_channels, **options)``: the scales the constructor accepts; it refuses
  the others with a message that says what to use instead.

Decoders, the profiler and the tests read these declarations through :func:`declaration`, so
a new method needs one module and one YAML in ``conf/upsampler/``. A plain factory that does
not subclass :class:`Upsampler` (a lambda in a notebook) is taken to need nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from torch import Tensor, nn

from upbench.instantiate import instantiate
from upbench.validation import is_int

UpsamplerSpec = Mapping | Callable[..., nn.Module]


class Scales(Container[int]):
    """A set of integer upsampling factors, given by a rule and described for messages."""

    def __init__(self, description: str, rule: Callable[[int], bool] = lambda scale: True):
        self.description = description
        self.rule = rule

    def __contains__(self, scale: object) -> bool:
        return is_int(scale) and scale >= 1 and self.rule(scale)

    def __repr__(self) -> str:
        return self.description


ANY_SCALE = Scales("any integer >= 1")
POWERS_OF_TWO = Scales("a power of two >= 2", lambda scale: scale >= 2 and not scale & (scale - 1))


def only(*scales: int) -> Scales:
    return Scales(" or ".join(map(str, scales)), lambda scale: scale in scales)


class Upsampler(nn.Module):
    """Base class of the upsamplers: the declarations above, all off by default."""

    needs_pool_indices: ClassVar[bool] = False
    needs_guide: ClassVar[bool] = False
    is_interpolation: ClassVar[bool] = False

    @classmethod
    def supported_scales(cls, in_channels: int, **options: Any) -> Container[int]:
        """The scales this method accepts with these options (any integer factor by default)."""
        return ANY_SCALE

    def analytic_flops(self, x_shape: Sequence[int]) -> dict[str, int]:
        """``{term: FLOPs}`` of one forward on an x of ``x_shape`` that
        ``torch.utils.flop_counter`` cannot see, since it counts convolutions and matrix
        products only (CARAFE's reassembly, SAPA's similarities). The profiler adds them; the
        interpolation, grid-sample and softmax ops are counted there for every method."""
        return {}


@dataclass(frozen=True)
class Declaration:
    """What an upsampler needs from its decoder, read from its class, with the options its
    spec sets (a config node's keys, a ``functools.partial``'s keywords)."""

    cls: type | None
    needs_pool_indices: bool = False
    needs_guide: bool = False
    is_interpolation: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.cls.__name__ if self.cls is not None else "the upsampler"

    def supported_scales(self, in_channels: int) -> Container[int]:
        """The scales the spec's method accepts with the spec's options."""
        if self.cls is None or not issubclass(self.cls, Upsampler):
            return ANY_SCALE
        return self.cls.supported_scales(in_channels, **self.options)


def upsampler_class(spec: UpsamplerSpec | nn.Module) -> type | None:
    """The class a config node (``_target_``), a class, a ``functools.partial`` of one or a
    module stands for; ``None`` for any other callable."""
    if isinstance(spec, nn.Module):
        return type(spec)
    if isinstance(spec, Mapping):
        from hydra.utils import get_class

        return get_class(spec["_target_"]) if "_target_" in spec else None
    while isinstance(spec, functools.partial):
        spec = spec.func
    return spec if isinstance(spec, type) else None


def _spec_options(spec: UpsamplerSpec | nn.Module) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        return {str(k): v for k, v in spec.items() if not str(k).startswith("_")}
    options: dict[str, Any] = {}
    while isinstance(spec, functools.partial):
        options = {**spec.keywords, **options}  # the outer partial's keywords win
        spec = spec.func
    return options


def declaration(spec: UpsamplerSpec | nn.Module) -> Declaration:
    cls = upsampler_class(spec)
    if cls is None:
        return Declaration(None)
    return Declaration(
        cls,
        needs_pool_indices=bool(getattr(cls, "needs_pool_indices", False)),
        needs_guide=bool(getattr(cls, "needs_guide", False)),
        is_interpolation=bool(getattr(cls, "is_interpolation", False)),
        options=_spec_options(spec),
    )


def build_upsampler(
    spec: UpsamplerSpec,
    in_channels: int,
    out_channels: int,
    scale: int,
    guide_channels: int | None = None,
) -> nn.Module:
    """Create one upsampler from a Hydra config node (``_target_``) or a callable factory.

    ``guide_channels`` is passed only to methods that declare ``needs_guide``; those refuse to
    be built where the decoder has no guide (``guide_channels=None``).
    """
    kwargs: dict[str, Any] = {
        "in_channels": in_channels,
        "out_channels": out_channels,
        "scale": scale,
    }
    declared = declaration(spec)
    if declared.needs_guide:
        if guide_channels is None:
            raise ValueError(
                f"{declared.name} is guided by the higher-resolution encoder feature, but this "
                f"x{scale} step has none (the step to the input resolution of a backbone whose "
                "first feature is strided): use decoder=segformer or decoder=fpn, which resize "
                "their logits to the input, or a built-in backbone (first feature at stride 1)"
            )
        kwargs["guide_channels"] = guide_channels
    if isinstance(spec, Mapping):
        return instantiate(spec, **kwargs)
    return spec(**kwargs)


def upsample(
    upsampler: nn.Module,
    x: Tensor,
    *,
    guide: Tensor | None = None,
    indices: Tensor | None = None,
    output_size: tuple[int, int] | None = None,
) -> Tensor:
    """Call ``upsampler`` on x with what it declared it needs."""
    declared = declaration(upsampler)
    if declared.needs_pool_indices:
        return upsampler(x, indices, output_size=output_size)
    if declared.needs_guide:
        return upsampler(x, guide)
    return upsampler(x)


def channel_projection(in_channels: int, out_channels: int) -> nn.Module:
    """The 1x1 conv that an upsampler adds when the channel count changes (identity otherwise).

    Not part of any of the papers, whose modules keep the channel count; every upsampler here
    uses this one, with PyTorch's default conv init, so that no method differs by it.
    """
    if in_channels == out_channels:
        return nn.Identity()
    return nn.Conv2d(in_channels, out_channels, kernel_size=1)
