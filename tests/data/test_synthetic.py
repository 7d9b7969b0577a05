"""The built-in synthetic data: batch contract, labels, thinness, determinism, colour-blindness."""

from __future__ import annotations

import hydra
import pytest
import torch
from omegaconf import OmegaConf

from tests.helpers import CONF_DIR
from upbench.data.synthetic import (
    MAX_CLASSES,
    SHAPE_KINDS,
    SyntheticDataModule,
    generate_sample,
    generate_split,
)


def make_module(**overrides) -> SyntheticDataModule:
    options = dict(
        num_train=12, num_val=6, num_test=6, image_size=32, num_classes=MAX_CLASSES, batch_size=4,
        seed=0,
    )  # fmt: skip
    return SyntheticDataModule(**{**options, **overrides})


def loader_tensors(loader) -> dict[str, torch.Tensor]:
    batches = list(loader)
    return {key: torch.cat([b[key] for b in batches]) for key in batches[0]}


def contains_square(mask: torch.Tensor, side: int) -> bool:
    """True if some side x side window of any (H, W) mask in the (N, H, W) stack is all True."""
    windows = mask.unfold(1, side, 1).unfold(2, side, 1)  # (N, H-s+1, W-s+1, s, s)
    return bool(windows.flatten(3).all(-1).any())


def colour_balanced_accuracy(images: torch.Tensor, masks: torch.Tensor, num_classes: int):
    """Mean per-class recall of a Gaussian class-conditional (QDA) classifier of the class from
    the RGB colour of a single pixel, with equal priors: fitted on the first half of the images,
    scored on the second. 1 / num_classes means colour carries no class information."""
    pixels = images.permute(0, 2, 3, 1).reshape(len(images), -1, 3).double() / 255
    labels = masks.reshape(len(masks), -1).long()
    half = len(images) // 2
    fit_x, fit_y = pixels[:half].reshape(-1, 3), labels[:half].reshape(-1)
    test_x, test_y = pixels[half:].reshape(-1, 3), labels[half:].reshape(-1)
    log_density = []
    for k in range(num_classes):
        xk = fit_x[fit_y == k]
        mean = xk.mean(0)
        cov = torch.cov(xk.T) + 1e-6 * torch.eye(3, dtype=torch.float64)
        gaussian = torch.distributions.MultivariateNormal(mean, covariance_matrix=cov)
        log_density.append(gaussian.log_prob(test_x))
    predicted = torch.stack(log_density, 1).argmax(1)
    recalls = [(predicted[test_y == k] == k).double().mean() for k in range(num_classes)]
    return float(torch.stack(recalls).mean())


def test_batches_follow_the_contract():
    module = make_module()
    module.setup("fit")
    batch = next(iter(module.train_dataloader()))
    assert set(batch) == {"image", "mask", "thin"}
    assert batch["image"].shape == (4, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 32, 32) and batch["mask"].dtype == torch.int64
    assert batch["thin"].shape == (4, 32, 32) and batch["thin"].dtype == torch.bool
    assert torch.isfinite(batch["image"]).all()
    assert batch["mask"].min() >= 0 and batch["mask"].max() < module.num_classes
    assert module.ignore_index == 255 and module.in_channels == 3
    assert module.class_names == ["background", *SHAPE_KINDS]
    assert len(module.palette) == module.num_classes
    assert all(len(c) == 3 and all(0 <= v <= 255 for v in c) for c in module.palette)


def test_images_are_normalised():
    # Each image has its own random colours, so the mean over N images scatters by about
    # 1 / sqrt(N): 256 small images put the bound below at ~3.5 sigma.
    module = make_module(num_val=256, image_size=24, batch_size=64)
    module.setup("validate")
    image = loader_tensors(module.val_dataloader())["image"]
    mean, std = image.mean((0, 2, 3)), image.std((0, 2, 3))
    assert mean.abs().max() < 0.2, mean
    assert ((std > 0.85) & (std < 1.15)).all(), std


@pytest.mark.parametrize("num_classes", [3, 5, MAX_CLASSES])
def test_every_class_appears(num_classes):
    _, masks, _ = generate_split(0, "train", 16, image_size=48, num_classes=num_classes)
    counts = torch.bincount(masks.flatten().long(), minlength=num_classes)
    assert len(counts) == num_classes
    assert (counts > 0).all(), counts


def test_binary_labels_every_kind_as_object():
    _, masks, thin = generate_split(0, "train", 16, image_size=48, num_classes=2)
    assert set(masks.unique().tolist()) == {0, 1}
    assert thin.any()
    # Objects other than curves are drawn too: many object pixels are not thin.
    assert ((masks == 1) & ~thin).sum() > 5 * thin.sum()


def test_thin_marks_exactly_the_curves_and_curves_are_at_most_3px_wide():
    _, masks, thin = generate_split(1, "train", 64, image_size=64)
    curve = masks == 1 + SHAPE_KINDS.index("curve")
    assert torch.equal(thin, curve)
    assert thin.sum() > 1000  # plenty of curve pixels, so the check below means something
    # A structure wider than 3 px contains a 4x4 square somewhere (morphological opening by a
    # 4x4 square would keep it); curves never do, even where several of them meet.
    assert not contains_square(curve, 4)
    assert contains_square(curve, 2)
    for kind in ("blob", "triangle", "quad", "star", "ellipse"):
        assert contains_square(masks == 1 + SHAPE_KINDS.index(kind), 3), kind


def test_thin_is_a_subset_of_objects_in_binary_mode():
    _, masks, thin = generate_split(0, "val", 16, image_size=32, num_classes=2)
    assert not (thin & (masks != 1)).any()
    assert not contains_square(thin, 4)


def test_same_seed_same_data_and_other_seed_other_data():
    first, second, other = make_module(seed=3), make_module(seed=3), make_module(seed=4)
    for module in (first, second, other):
        module.setup()
    for split in ("train_set", "val_set", "test_set"):
        a, b, c = (getattr(m, split) for m in (first, second, other))
        assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
        assert torch.equal(a.thin, b.thin)
        assert not torch.equal(a.images, c.images) and not torch.equal(a.masks, c.masks)


def test_splits_are_different_streams():
    module = make_module(num_train=6)
    module.setup()
    splits = (module.train_set, module.val_set, module.test_set)
    for i, first in enumerate(splits):
        for second in splits[i + 1 :]:
            assert not torch.equal(first.images, second.images)
            # Not just shifted: no image of one split appears in another.
            flat_a, flat_b = first.images.flatten(1), second.images.flatten(1)
            assert not (flat_a[:, None] == flat_b[None]).all(-1).any()


def test_sample_depends_only_on_seed_split_and_index():
    small, large = make_module(num_val=3), make_module(num_val=6, batch_size=5)
    small.setup("validate")
    large.setup("validate")
    assert torch.equal(small.val_set.images, large.val_set.images[:3])
    image, mask, thin = generate_sample(0, "val", 4, image_size=32)
    assert torch.equal(large.val_set.images[4], torch.from_numpy(image))
    assert torch.equal(large.val_set.masks[4], torch.from_numpy(mask))
    assert torch.equal(large.val_set.thin[4], torch.from_numpy(thin))
    # Batch size, access order and worker processes do not change what sample i is.
    by_index = [large.val_set[i] for i in reversed(range(6))][::-1]
    batched = loader_tensors(large.val_dataloader())
    large.batch_size, large.num_workers = 2, 1
    in_worker = loader_tensors(large.val_dataloader())
    for key in ("image", "mask", "thin"):
        stacked = torch.stack([item[key] for item in by_index])
        assert torch.equal(batched[key], stacked) and torch.equal(in_worker[key], stacked)


def test_colour_does_not_predict_the_class():
    # Many small scenes: the score is only as good as the number of independent object colours
    # per class; with 400 scenes it stays within ~0.01 of chance across seeds.
    images, masks, _ = generate_split(0, "train", 400, image_size=24)
    chance = 1 / MAX_CLASSES
    assert colour_balanced_accuracy(images, masks, MAX_CLASSES) < chance + 0.05
    # Positive control: the same classifier sees a colour code at once.
    coded = images.clone()
    coded[:, 0] = (masks * 36).to(torch.uint8)
    assert colour_balanced_accuracy(coded, masks, MAX_CLASSES) > 0.95


@pytest.mark.parametrize("size", [16, 41, 80])
def test_other_image_sizes(size):
    module = make_module(image_size=size, num_test=4)
    module.setup("test")
    batch = next(iter(module.test_dataloader()))
    assert batch["image"].shape == (4, 3, size, size)
    assert batch["mask"].shape == batch["thin"].shape == (4, size, size)
    assert (batch["mask"] > 0).any()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"num_classes": 1}, "num_classes from 2 to 7"),
        ({"num_classes": MAX_CLASSES + 1}, "num_classes from 2 to 7"),
        ({"image_size": 15}, "image_size >= 16"),
        ({"num_train": 0}, "num_train must be a positive integer"),
        ({"noise_std": -0.1}, "noise_std must be >= 0"),
        ({"seed": -1}, "seed must be a non-negative integer"),
    ],
)
def test_bad_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        make_module(**options)


def test_loader_before_setup_is_refused():
    with pytest.raises(RuntimeError, match="setup"):
        make_module().train_dataloader()


def test_hydra_config_builds_the_module_with_the_run_seed():
    cfg = OmegaConf.create({"seed": 7, "data": OmegaConf.load(CONF_DIR / "data/synthetic.yaml")})
    module = hydra.utils.instantiate(cfg.data)
    assert isinstance(module, SyntheticDataModule)
    assert module.seed == 7 and module.num_classes == cfg.data.num_classes
    assert module.image_size == cfg.data.image_size
    assert module.sizes == {
        "train": cfg.data.num_train,
        "val": cfg.data.num_val,
        "test": cfg.data.num_test,
    }


def test_class_defaults_are_the_yaml_defaults():
    """A notebook user who builds SyntheticDataModule() gets the data `python train.py` gets."""
    import inspect

    from omegaconf import OmegaConf

    yaml = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "data" / "synthetic.yaml"))
    signature = inspect.signature(SyntheticDataModule).parameters
    for key, value in yaml.items():
        if key.startswith("_") or key == "seed":  # seed follows the run's ${seed}
            continue
        assert signature[key].default == value, key
