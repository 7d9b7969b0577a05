"""Built-in procedurally generated segmentation data (``data=synthetic``).

Every scene is a textured, noisy background with a few objects drawn over it; the class of an
object is its *shape kind*, never its colour, so the network has to resolve shape - thin curves,
tiny blobs and sharp polygon corners - which is exactly where feature upsamplers differ:

    0 background, 1 curve (1 to 2.7 px wide), 2 blob (3 to 6 px across), 3 triangle, 4 quad,
    5 star, 6 ellipse.

``num_classes=k`` with ``3 <= k <= 7`` draws the first ``k - 1`` kinds, each its own class;
``num_classes=2`` draws every kind and labels all of them 1 (``object``). Background and objects
are painted from the same texture distribution (random base colour plus random sinusoidal
gratings) and receive the same pixel noise, so per-pixel colour carries no class information.
Objects may occlude each other; the later one wins.

Sample ``i`` of a split is a pure function of ``(seed, split, i)`` (its own
``numpy.random.SeedSequence``), independent of split sizes, batch size, worker count and the
order of access. Each split is generated once in :meth:`SyntheticDataModule.setup` and held in
memory as uint8 tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from upbench.data.base import SegmentationDataModule
from upbench.validation import non_negative_int, positive_int

SHAPE_KINDS = ("curve", "blob", "triangle", "quad", "star", "ellipse")
MAX_CLASSES = len(SHAPE_KINDS) + 1
MIN_IMAGE_SIZE = 16
SPLITS = ("train", "val", "test")
PALETTE = (
    (0, 0, 0),
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
)
# Per-channel statistics of the generated uint8 images (in [0, 1] units), measured on 4096
# train images at 64 px; every colour comes from the same symmetric distribution, so they barely
# depend on size or seed. Fixed constants keep sample i a pure function of (seed, split, i).
MEAN = (0.5, 0.5, 0.5)
STD = (0.293, 0.293, 0.293)

# Curves keep a radius of curvature >= _MIN_CURVE_RADIUS px and a width < 3 px, and no curve
# comes within _CURVE_CLEARANCE px of an earlier one's band. Both together guarantee that the
# curve pixels of a scene never contain a 4x4 square, i.e. they really are <= 3 px wide: a tight
# bend or two touching curves would otherwise fatten into a blob.
_MIN_CURVE_RADIUS = 6.0
_MAX_CURVE_WIDTH = 2.7
_CURVE_CLEARANCE = 1.5
_CURVE_STEP = 0.2  # spacing of the dense polyline; distance error <= step / 2
_CURVE_TRIES = 4
_OBJECTS_PER_64PX = (5, 12)  # min/max objects in a 64 x 64 scene, scaled with the area
_MIN_CONTRAST = 0.3  # object base colours closer than this to the background's are mirrored


def _texture(rng: np.random.Generator, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Random colour texture at pixel coordinates ``y``, ``x`` (same shape S) -> (3, *S) in
    roughly [0, 1]: a uniform random base colour plus three sinusoidal gratings of random
    frequency (0.01-0.25 cycles/px), orientation, phase and colour. Backgrounds and objects
    use this same distribution, so colour cannot predict the class."""
    colour = rng.uniform(0.0, 1.0, size=3)
    return _grated(rng, colour, y, x)


def _grated(rng: np.random.Generator, colour: np.ndarray, y: np.ndarray, x: np.ndarray):
    out = np.broadcast_to(colour.reshape(3, *([1] * y.ndim)), (3, *y.shape)).copy()
    for _ in range(3):
        freq = 2 * math.pi * rng.uniform(0.01, 0.25)
        angle = rng.uniform(0, math.pi)
        phase = rng.uniform(0, 2 * math.pi)
        amplitude = rng.uniform(-0.1, 0.1, size=3)
        wave = np.sin(freq * (math.cos(angle) * x + math.sin(angle) * y) + phase)
        out += amplitude.reshape(3, *([1] * y.ndim)) * wave
    return out


class _Canvas:
    """One scene being painted: float image (3, S, S), uint8 class mask, bool thin mask and the
    zone around curves that later curves must keep out of."""

    def __init__(self, rng: np.random.Generator, size: int):
        self.rng = rng
        self.size = size
        grid_y, grid_x = np.mgrid[0:size, 0:size].astype(np.float64)
        self.background = rng.uniform(0.0, 1.0, size=3)
        self.image = _grated(rng, self.background, grid_y, grid_x)
        self.mask = np.zeros((size, size), np.uint8)
        self.thin = np.zeros((size, size), bool)
        self.curve_zone = np.zeros((size, size), bool)

    def object_texture(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        colour = self.rng.uniform(0.0, 1.0, size=3)
        # Mirroring c -> 1 - c keeps the uniform colour distribution but stops an object from
        # vanishing into a same-coloured background.
        if np.linalg.norm(colour - self.background) < _MIN_CONTRAST:
            colour = 1.0 - colour
        return _grated(self.rng, colour, y, x)

    def paint(self, ys: np.ndarray, xs: np.ndarray, label: int, thin: bool) -> None:
        """Paint the pixels (ys, xs) (int arrays) with a fresh texture; later paint wins."""
        if ys.size == 0:
            return
        self.image[:, ys, xs] = self.object_texture(ys.astype(np.float64), xs.astype(np.float64))
        self.mask[ys, xs] = label
        self.thin[ys, xs] = thin

    def box(self, cy: float, cx: float, radius: float):
        """Integer pixel coordinates of the square window around (cy, cx), clipped to the image:
        (ys (h, 1), xs (1, w)), possibly empty."""
        y0, y1 = max(0, math.floor(cy - radius)), min(self.size, math.ceil(cy + radius) + 1)
        x0, x1 = max(0, math.floor(cx - radius)), min(self.size, math.ceil(cx + radius) + 1)
        return np.arange(y0, y1)[:, None], np.arange(x0, x1)[None, :]

    def paint_region(self, cy, cx, radius, inside_fn, label: int) -> None:
        """Paint the pixels of the window around (cy, cx) for which ``inside_fn(dy, dx)`` is
        True, where dy, dx are offsets from the centre."""
        ys, xs = self.box(cy, cx, radius)
        if ys.size == 0 or xs.size == 0:
            return
        inside = inside_fn(ys - cy, xs - cx)
        iy, ix = np.nonzero(inside)
        self.paint(ys[iy, 0], xs[0, ix], label, thin=False)


def _rotate(dy, dx, angle: float):
    c, s = math.cos(angle), math.sin(angle)
    return c * dy + s * dx, -s * dy + c * dx


def _inside_polygon(dy: np.ndarray, dx: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Even-odd (crossing number) point-in-polygon test; ``vertices`` (V, 2) as (y, x) offsets.
    Works for non-convex polygons such as stars. Returns bool of the broadcast shape."""
    y1, x1 = vertices[:, 0], vertices[:, 1]
    y2, x2 = np.roll(y1, -1), np.roll(x1, -1)
    shape = (-1,) + (1,) * np.broadcast(dy, dx).ndim
    y1, x1, y2, x2 = (v.reshape(shape) for v in (y1, x1, y2, x2))
    straddles = (y1 > dy) != (y2 > dy)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (dy - y1) * (x2 - x1) / (y2 - y1)
    crossings = straddles & (dx < x_cross)
    return (crossings.sum(axis=0) % 2).astype(bool)


def _random_polygon(rng, n_vertices: int, radius: float) -> np.ndarray:
    """(n, 2) vertices of a random polygon around the origin with unevenly spaced angles (so
    corners differ in sharpness) and radii in [0.7, 1] * radius."""
    gaps = rng.uniform(0.6, 1.4, size=n_vertices)
    angles = rng.uniform(0, 2 * math.pi) + 2 * math.pi * np.cumsum(gaps) / gaps.sum()
    radii = radius * rng.uniform(0.7, 1.0, size=n_vertices)
    return np.stack([radii * np.sin(angles), radii * np.cos(angles)], axis=1)


def _draw_polygon(canvas: _Canvas, kind: str, label: int) -> None:
    rng, size = canvas.rng, canvas.size
    radius = rng.uniform(max(4.0, 0.07 * size), max(6.0, 0.2 * size))
    if kind == "star":
        points = int(rng.integers(4, 7))
        angles = rng.uniform(0, 2 * math.pi) + math.pi * np.arange(2 * points) / points
        radii = np.where(np.arange(2 * points) % 2 == 0, radius, radius * rng.uniform(0.35, 0.55))
        vertices = np.stack([radii * np.sin(angles), radii * np.cos(angles)], axis=1)
    else:
        vertices = _random_polygon(rng, 3 if kind == "triangle" else 4, radius)
    cy, cx = rng.uniform(0, size - 1, size=2)
    canvas.paint_region(cy, cx, radius, lambda dy, dx: _inside_polygon(dy, dx, vertices), label)


def _draw_ellipse(canvas: _Canvas, kind: str, label: int) -> None:
    rng, size = canvas.rng, canvas.size
    if kind == "blob":
        semi_a, semi_b = rng.uniform(1.5, 3.0, size=2)
    else:
        semi_a = rng.uniform(max(4.5, 0.09 * size), max(7.0, 0.22 * size))
        semi_b = max(2.5, semi_a * rng.uniform(0.3, 0.7))
    angle = rng.uniform(0, math.pi)
    cy, cx = rng.uniform(0, size - 1, size=2)

    def inside(dy, dx):
        u, v = _rotate(dy, dx, angle)
        return (u / semi_a) ** 2 + (v / semi_b) ** 2 < 1.0

    canvas.paint_region(cy, cx, max(semi_a, semi_b), inside, label)


def _curve_points(rng: np.random.Generator, size: int) -> np.ndarray:
    """(M, 2) dense (y, x) points, spaced <= ~_CURVE_STEP px, of a random smooth curve whose
    radius of curvature is >= _MIN_CURVE_RADIUS: a sinusoidal wave along a line or a circular
    arc of 90-270 degrees, randomly rotated and placed."""
    if rng.random() < 0.5:
        length = rng.uniform(0.4, 1.0) * max(size, 16)
        wavelength = rng.uniform(12.0, max(12.0, 0.6 * size))
        k = 2 * math.pi / wavelength
        # Curvature of A sin(k t) peaks at A k^2; bounding it keeps the band a proper tube.
        amplitude = rng.uniform(0.2, 1.0) / (_MIN_CURVE_RADIUS * k * k)
        slope = amplitude * k
        t = np.arange(-length / 2, length / 2, _CURVE_STEP / math.sqrt(1 + slope * slope))
        dy, dx = amplitude * np.sin(k * t + rng.uniform(0, 2 * math.pi)), t
    else:
        radius = rng.uniform(_MIN_CURVE_RADIUS, max(_MIN_CURVE_RADIUS + 1, 0.45 * size))
        span = rng.uniform(0.5, 1.5) * math.pi
        theta = rng.uniform(0, 2 * math.pi) + np.arange(0, span, _CURVE_STEP / radius)
        dy, dx = radius * np.sin(theta), radius * np.cos(theta) - radius
    dy, dx = _rotate(dy, dx, rng.uniform(0, 2 * math.pi))
    cy, cx = rng.uniform(0, size - 1, size=2)
    return np.stack([cy + dy, cx + dx], axis=1)


def _curve_pixels(points: np.ndarray, half_width: float, size: int):
    """Flat pixel indices (unique, sorted) of the band (distance < half_width) and of the zone
    (distance < half_width + _CURVE_CLEARANCE) around the dense points (M, 2)."""
    reach = half_width + _CURVE_CLEARANCE
    k = math.ceil(reach)
    offset_y, offset_x = np.mgrid[-k : k + 1, -k : k + 1].reshape(2, 1, -1)
    pixel_y = np.rint(points[:, :1]) + offset_y  # (M, K)
    pixel_x = np.rint(points[:, 1:]) + offset_x
    dist = np.hypot(pixel_y - points[:, :1], pixel_x - points[:, 1:])
    valid = (dist < reach) & (pixel_y >= 0) & (pixel_y < size) & (pixel_x >= 0) & (pixel_x < size)
    flat = (pixel_y * size + pixel_x).astype(np.int64)
    zone = np.zeros(size * size, bool)
    zone[flat[valid]] = True
    band = np.zeros(size * size, bool)
    band[flat[valid & (dist < half_width)]] = True
    return np.flatnonzero(band), np.flatnonzero(zone)


def _draw_curve(canvas: _Canvas, kind: str, label: int) -> None:
    rng, size = canvas.rng, canvas.size
    half_width = rng.uniform(1.0, _MAX_CURVE_WIDTH) / 2
    for _ in range(_CURVE_TRIES):
        band, zone = _curve_pixels(_curve_points(rng, size), half_width, size)
        if not canvas.curve_zone.flat[band].any():
            canvas.curve_zone.flat[zone] = True
            canvas.paint(band // size, band % size, label, thin=True)
            return


_DRAW = {
    "curve": _draw_curve,
    "blob": _draw_ellipse,
    "triangle": _draw_polygon,
    "quad": _draw_polygon,
    "star": _draw_polygon,
    "ellipse": _draw_ellipse,
}


def check_options(image_size: int, num_classes: int) -> None:
    if not isinstance(num_classes, int) or not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(
            f"synthetic data supports num_classes from 2 to {MAX_CLASSES} (background + "
            f"{', '.join(SHAPE_KINDS)}), got {num_classes!r}: set data.num_classes in that range"
        )
    if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
        raise ValueError(
            f"synthetic data needs image_size >= {MIN_IMAGE_SIZE} px so that objects fit, got "
            f"{image_size!r}: set data.image_size to {MIN_IMAGE_SIZE} or more"
        )


def generate_sample(
    seed: int,
    split: str,
    index: int,
    image_size: int = 64,
    num_classes: int = MAX_CLASSES,
    noise_std: float = 0.04,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sample ``index`` of ``split``: a pure function of its arguments.

    Returns:
        image: uint8 (3, S, S) RGB; mask: uint8 (S, S) class ids in [0, num_classes);
        thin: bool (S, S), True on curve pixels (structures < 3 px wide).
    """
    check_options(image_size, num_classes)
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    canvas = _Canvas(rng, image_size)
    kinds = SHAPE_KINDS if num_classes == 2 else SHAPE_KINDS[: num_classes - 1]
    area = (image_size / 64) ** 2
    low = max(1, round(_OBJECTS_PER_64PX[0] * area))
    high = max(low + 1, round(_OBJECTS_PER_64PX[1] * area))
    for _ in range(int(rng.integers(low, high + 1))):
        kind_id = int(rng.integers(len(kinds)))
        label = 1 if num_classes == 2 else kind_id + 1
        _DRAW[kinds[kind_id]](canvas, kinds[kind_id], label)
    image = canvas.image + rng.normal(0.0, noise_std, size=canvas.image.shape)
    image = np.rint(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8)
    return image, canvas.mask, canvas.thin


def generate_split(
    seed: int,
    split: str,
    num_samples: int,
    image_size: int = 64,
    num_classes: int = MAX_CLASSES,
    noise_std: float = 0.04,
) -> tuple[Tensor, Tensor, Tensor]:
    """Samples 0..num_samples-1 of ``split``: uint8 images (N, 3, S, S), uint8 masks (N, S, S),
    bool thin masks (N, S, S)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    images = np.empty((num_samples, 3, image_size, image_size), np.uint8)
    masks = np.empty((num_samples, image_size, image_size), np.uint8)
    thin = np.empty((num_samples, image_size, image_size), bool)
    for i in range(num_samples):
        images[i], masks[i], thin[i] = generate_sample(
            seed, split, i, image_size, num_classes, noise_std
        )
    return torch.from_numpy(images), torch.from_numpy(masks), torch.from_numpy(thin)


class InMemorySegmentationDataset(Dataset):
    """uint8 images (N, 3, H, W), class masks (N, H, W) and thin masks (N, H, W) held in memory;
    items are the batch-contract dicts with the image normalised by ``mean``/``std`` (in [0, 1]
    units)."""

    def __init__(self, images: Tensor, masks: Tensor, thin: Tensor, mean, std):
        if not (len(images) == len(masks) == len(thin)):
            raise ValueError("images, masks and thin must have the same length")
        self.images, self.masks, self.thin = images, masks, thin
        self.scale = (255.0 * torch.tensor(std, dtype=torch.float32)).view(3, 1, 1)
        self.shift = (255.0 * torch.tensor(mean, dtype=torch.float32)).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {
            "image": (self.images[index].float() - self.shift) / self.scale,
            "mask": self.masks[index].long(),
            "thin": self.thin[index],
        }


class SyntheticDataModule(SegmentationDataModule):
    """Procedural shape-kind segmentation (see the module docstring).

    Batches: ``image`` float32 (N, 3, S, S) normalised to about zero mean / unit std, ``mask``
    int64 (N, S, S) in [0, num_classes), ``thin`` bool (N, S, S) on curve pixels.

    Args:
        num_train, num_val, num_test: samples per split (each >= 1).
        image_size: side S of the square images (>= 16; any integer).
        num_classes: 2 (background / object) to 7 (background + six shape kinds).
        noise_std: std of the Gaussian pixel noise, in [0, 1] intensity units.
        seed: seed of the generator; sample i of a split depends only on (seed, split, i).
        batch_size, num_workers, pin_memory: DataLoader options.
    """

    def __init__(
        self,
        num_train: int = 2000,
        num_val: int = 200,
        num_test: int = 400,
        image_size: int = 32,
        num_classes: int = 4,
        noise_std: float = 0.04,
        seed: int = 0,
        batch_size: int = 16,
        num_workers: int = 0,
        pin_memory: bool = False,
    ):
        super().__init__(batch_size=batch_size, num_workers=num_workers, pin_memory=pin_memory)
        check_options(image_size, num_classes)
        for name, count in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            positive_int(f"data.{name}", count)
        if not noise_std >= 0:
            raise ValueError(f"data.noise_std must be >= 0, got {noise_std!r}")
        non_negative_int("data.seed", seed)
        self.sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.image_size = image_size
        self.num_classes = num_classes
        self.noise_std = noise_std
        self.seed = seed
        self.class_names = (
            ["background", "object"] if num_classes == 2 else ["background", *SHAPE_KINDS]
        )[:num_classes]
        self.palette = [list(c) for c in PALETTE[:num_classes]]

    def make_split(self, split: str) -> InMemorySegmentationDataset:
        images, masks, thin = generate_split(
            self.seed,
            split,
            self.sizes[split],
            self.image_size,
            self.num_classes,
            self.noise_std,
        )
        return InMemorySegmentationDataset(images, masks, thin, MEAN, STD)

    def setup(self, stage: str | None = None) -> None:
        # Each split is generated at most once per module; the generator is pure, so caching
        # cannot change what a stage sees.
        wanted = {
            "fit": ("train", "val"),
            "validate": ("val",),
            "test": ("test",),
            "predict": ("test",),
            None: SPLITS,
        }[stage]
        for split in wanted:
            if getattr(self, f"{split}_set") is None:
                setattr(self, f"{split}_set", self.make_split(split))
