"""On-disk datasets: miniature copies in the official layouts and file formats, built here.

Each test checks that the loader finds the data, maps labels pixel for pixel (ignore included),
and that a ``fast_dev_run`` trains and evaluates on it; plus the errors for missing and
incomplete folders, which must come at instantiation, before any training.
"""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

import hydra
import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from PIL import Image

from tests.helpers import CONF_DIR, compose_config
from upbench.data.pets import val_indices
from upbench.data.real import bitmap_palette
from upbench.data.roots import ENV_VAR, DatasetRootError
from upbench.model import build_model
from upbench.task import SegmentationTask

IGNORE = 255
RNG_SEED = 0


def build(name: str, root: Path, **overrides):
    """Instantiate conf/data/<name>.yaml (with the shared real/base.yaml) as Hydra composes it,
    with tiny-run overrides."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[f"data={name}"]).data
    GlobalHydra.instance().clear()
    tiny = {
        "root": None if root is None else str(root),
        "num_workers": 0,
        "batch_size": 2,
        "crop_size": 16,
    }
    if name == "pets":  # the miniature trainval list has 4 entries: hold out one
        tiny["val_fraction"] = 0.25
    cfg.merge_with({**tiny, **overrides})
    return hydra.utils.instantiate(cfg)


def root_error(*args, **kwargs) -> str:
    """Message of the DatasetRootError that ``build(*args, **kwargs)`` raises (Hydra wraps it
    in an InstantiationException whose ``__cause__`` it is)."""
    with pytest.raises(Exception) as info:  # noqa: B017 - the type is checked on the cause
        build(*args, **kwargs)
    error = info.value
    while error is not None and not isinstance(error, DatasetRootError):
        error = error.__cause__
    assert error is not None, f"no DatasetRootError in {info.value!r}"
    return str(error)


def random_image(rng, path: Path) -> None:
    h, w = rng.integers(12, 30, size=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def write_mask(path: Path, raw: np.ndarray, palette: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(raw.astype(np.uint8))
    if palette:  # VOC stores palette PNGs: pixel value = index into the colour table
        image.putpalette([c for rgb in bitmap_palette(256) for c in rgb])  # L -> P
    image.save(path)


def raw_for(image_path: Path, rng, values: np.ndarray) -> np.ndarray:
    w, h = Image.open(image_path).size
    return rng.choice(values, size=(h, w))


# --- miniature datasets -------------------------------------------------------------------------
# Each returns {image path: raw mask array} for the images of the val split.


def make_voc(root: Path, rng, sbd: bool = False) -> dict[Path, np.ndarray]:
    voc = root / "VOCdevkit/VOC2012"
    ids = {
        "train": ["2007_000032", "2007_000039", "2007_000063"],
        "val": ["2007_000033", "2008_000002"],
    }
    values = np.array([*range(21)])
    val_raw = {}
    for split, names in ids.items():
        (voc / "ImageSets/Segmentation").mkdir(parents=True, exist_ok=True)
        (voc / f"ImageSets/Segmentation/{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            random_image(rng, voc / f"JPEGImages/{name}.jpg")
            raw = raw_for(voc / f"JPEGImages/{name}.jpg", rng, values)
            raw[0, :] = raw[:, -1] = 255  # VOC's void object borders
            write_mask(voc / f"SegmentationClass/{name}.png", raw, palette=True)
            if split == "val":
                val_raw[voc / f"JPEGImages/{name}.jpg"] = raw
    if sbd:
        aug = ["2009_000001", "2009_000002", ids["val"][0]]  # the last one must be dropped
        for name in aug:
            if not (voc / f"JPEGImages/{name}.jpg").exists():
                random_image(rng, voc / f"JPEGImages/{name}.jpg")
            raw = raw_for(voc / f"JPEGImages/{name}.jpg", rng, values)
            write_mask(voc / f"SegmentationClassAug/{name}.png", raw)
        lines = [f"/JPEGImages/{n}.jpg /SegmentationClassAug/{n}.png" for n in aug]
        (voc / "ImageSets/Segmentation/train_aug.txt").write_text("\n".join(lines) + "\n")
    return val_raw


def make_pets(root: Path, rng) -> dict[Path, np.ndarray]:
    base = root / "oxford-iiit-pet"
    entries = {
        "trainval": [
            ("Abyssinian", 1, 1),
            ("Abyssinian", 1, 2),
            ("beagle", 2, 2),
            ("beagle", 2, 3),
        ],
        "test": [("Abyssinian", 1, 7), ("beagle", 2, 8)],
    }
    test_raw = {}
    (base / "annotations").mkdir(parents=True)
    for split, rows in entries.items():
        lines = []
        for breed, class_id, n in rows:
            name = f"{breed}_{n}"
            species = 1 if breed[0].isupper() else 2  # cats are capitalised in the official list
            lines.append(f"{name} {class_id} {species} {class_id}")
            random_image(rng, base / f"images/{name}.jpg")
            raw = raw_for(base / f"images/{name}.jpg", rng, np.array([1, 2, 3]))
            write_mask(base / f"annotations/trimaps/{name}.png", raw)
            if split == "test":
                test_raw[base / f"images/{name}.jpg"] = raw
        (base / f"annotations/{split}.txt").write_text("\n".join(lines) + "\n")
    return test_raw


def make_cityscapes(root: Path, rng) -> dict[Path, np.ndarray]:
    frames = {"train": [("aachen", 19), ("bochum", 42)], "val": [("frankfurt", 294), ("lindau", 5)]}
    val_raw = {}
    for split, names in frames.items():
        for city, frame in names:
            stem = f"{city}_000000_{frame:06d}"
            image = root / f"leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png"
            random_image(rng, image)
            raw = raw_for(image, rng, np.arange(34))
            write_mask(root / f"gtFine/{split}/{city}/{stem}_gtFine_labelIds.png", raw)
            if split == "val":
                val_raw[image] = raw
    return val_raw


def make_ade20k(root: Path, rng) -> dict[Path, np.ndarray]:
    base = root / "ADEChallengeData2016"
    val_raw = {}
    for folder, prefix in (("training", "ADE_train"), ("validation", "ADE_val")):
        for n in (1, 2, 3):
            image = base / f"images/{folder}/{prefix}_{n:08d}.jpg"
            random_image(rng, image)
            raw = raw_for(image, rng, np.arange(151))
            write_mask(base / f"annotations/{folder}/{prefix}_{n:08d}.png", raw)
            if folder == "validation":
                val_raw[image] = raw
    return val_raw


# Expected mappings written out independently of the loaders' lookup tables.
CITYSCAPES_TRAIN_IDS = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12,
    26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}  # fmt: skip


def expected_voc(raw):
    return raw  # 0..20 are the classes, 255 stays void


def expected_pets_class(raw):
    return np.select([raw == 1, raw == 2, raw == 3], [1, 0, 2], IGNORE)


def expected_pets_ignore(raw):
    return np.select([raw == 1, raw == 2], [1, 0], IGNORE)


def expected_cityscapes(raw):
    out = np.full_like(raw, IGNORE)
    for label_id, train_id in CITYSCAPES_TRAIN_IDS.items():
        out[raw == label_id] = train_id
    return out


def expected_ade20k(raw):
    return np.where(raw == 0, IGNORE, raw - 1)


CASES = {
    # name: (builder, expected mapping, split holding the raw masks returned, overrides)
    "voc": (make_voc, expected_voc, "val", {}),
    "pets": (make_pets, expected_pets_class, "test", {}),
    "pets_ignore": (make_pets, expected_pets_ignore, "test", {"boundary": "ignore"}),
    "cityscapes": (make_cityscapes, expected_cityscapes, "val", {}),
    "ade20k": (make_ade20k, expected_ade20k, "val", {}),
}


@pytest.mark.parametrize("case", CASES)
def test_labels_are_mapped_pixel_for_pixel(case, tmp_path):
    builder, expected, split, overrides = CASES[case]
    raw_masks = builder(tmp_path, np.random.default_rng(RNG_SEED))
    dm = build(case.split("_")[0], tmp_path, size_divisor=1, **overrides)
    dm.setup("fit")
    dataset = dm.val_set if split == "val" else dm.test_set
    pairs = dataset.pairs
    assert len(dataset) == len(raw_masks)
    seen = set()
    for index in range(len(dataset)):
        sample = dataset[index]
        raw = raw_masks[_image_path(pairs, index)]
        assert sample["mask"].dtype == torch.int64
        assert sample["image"].shape == (3, *raw.shape)
        np.testing.assert_array_equal(sample["mask"].numpy(), expected(raw))
        seen |= set(np.unique(sample["mask"].numpy()).tolist())
    assert IGNORE in seen or case == "pets"  # the ignore path is exercised where it exists
    assert max(seen - {IGNORE}) < dm.num_classes
    assert len(dm.class_names) == dm.num_classes == len(dm.palette)
    assert len(set(dm.class_names)) == dm.num_classes


def _image_path(pairs, index: int) -> Path:
    for attr in ("images", "_images"):
        if hasattr(pairs, attr):
            return Path(getattr(pairs, attr)[index])
    return Path(pairs.dataset._images[pairs.indices[index]])  # a Subset of OxfordIIITPet


def project_task(tmp_path, num_classes: int) -> SegmentationTask:
    """The project's own network (small built-in ResNet U-Net) and LightningModule."""
    cfg = compose_config(tmp_path / "cfg", ["backbone.width=8"])
    return SegmentationTask(
        build_model(cfg, num_classes),
        num_classes,
        optimizer=partial(torch.optim.SGD, lr=0.1),
        ignore_index=IGNORE,
    )


@pytest.mark.parametrize("case", ["voc", "pets", "cityscapes", "ade20k"])
def test_fast_dev_run_trains_and_evaluates(case, tmp_path):
    builder = CASES[case][0]
    builder(tmp_path, np.random.default_rng(RNG_SEED))
    dm = build(case, tmp_path, size_divisor=8)
    model = project_task(tmp_path, dm.num_classes)
    before = model.model.head.weight.detach().clone()
    trainer = pl.Trainer(
        fast_dev_run=True, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm)
    assert not torch.equal(before, model.model.head.weight)
    batch = next(iter(dm.test_dataloader()))  # images of different sizes: padded, multiple of 8
    assert batch["image"].shape[0] == 2 and all(s % 8 == 0 for s in batch["mask"].shape[-2:])
    assert next(iter(dm.train_dataloader()))["mask"].shape == (2, 16, 16)
    trainer.test(model, datamodule=dm, verbose=False)


def test_voc_sbd_list_drops_val_ids(tmp_path):
    make_voc(tmp_path, np.random.default_rng(RNG_SEED), sbd=True)
    dm = build("voc", tmp_path, sbd=True)
    with pytest.warns(UserWarning, match="dropped 1 ids of val.txt"):
        dm.setup("fit")
    names = [Path(p).stem for p in dm.train_set.pairs.images]
    assert names == ["2009_000001", "2009_000002"]
    assert all("SegmentationClassAug" in str(p) for p in dm.train_set.pairs.masks)
    assert dm.train_set[0]["mask"].shape == (16, 16)


LAYOUT_SNIPPETS = {
    "voc": ("SegmentationClass/<id>.png", "host.robots.ox.ac.uk/pascal/VOC/voc2012"),
    "pets": ("annotations/", "robots.ox.ac.uk/~vgg/data/pets"),
    "cityscapes": ("gtFine_labelIds.png", "cityscapes-dataset.com"),
    "ade20k": ("ADEChallengeData2016/", "sceneparsing.csail.mit.edu"),
}


@pytest.mark.parametrize("name", LAYOUT_SNIPPETS)
def test_missing_root_names_layout_and_download(name, tmp_path, monkeypatch):
    tree, url = LAYOUT_SNIPPETS[name]
    message = root_error(name, tmp_path / "nowhere")
    assert "does not exist" in message and tree in message and url in message
    # root: null falls back to $UPBENCH_DATA/<name>, and says so when neither is set.
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert f"{ENV_VAR} is unset" in root_error(name, None)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert f"{tmp_path / name} does not exist" in root_error(name, None)


@pytest.mark.parametrize(
    "name,remove",
    [
        ("voc", "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt"),
        ("pets", "oxford-iiit-pet/annotations/trimaps"),
        ("cityscapes", "gtFine/val"),
        ("ade20k", "ADEChallengeData2016/annotations/training"),
    ],
)
def test_incomplete_root_fails_at_instantiation(name, remove, tmp_path):
    CASES[name][0](tmp_path, np.random.default_rng(RNG_SEED))
    target = tmp_path / remove
    if target.is_dir():  # an interrupted extraction: the folder exists but is empty
        shutil.rmtree(target)
        target.mkdir()
    else:
        target.unlink()
    message = root_error(name, tmp_path)
    assert "is incomplete, missing" in message and Path(remove).name in message
    assert LAYOUT_SNIPPETS[name][1] in message


def test_missing_listed_file_fails_in_setup_before_training(tmp_path):
    val_raw = make_voc(tmp_path, np.random.default_rng(RNG_SEED))
    lost = next(iter(val_raw)).with_suffix(".png")
    lost = lost.parent.parent / "SegmentationClass" / lost.name
    lost.unlink()
    dm = build("voc", tmp_path)
    with pytest.raises(DatasetRootError, match="1 listed files are missing") as error:
        dm.setup("fit")
    assert lost.name in str(error.value)


def test_pets_val_is_carved_evenly_from_trainval(tmp_path):
    # floor((i + 1) * 0.3) > floor(i * 0.3) holds for i = 3, 6, 9 only.
    assert np.flatnonzero(val_indices(10, 0.3)).tolist() == [3, 6, 9]
    make_pets(tmp_path, np.random.default_rng(RNG_SEED))
    dm = build("pets", tmp_path)
    dm.setup("fit")
    assert [_image_path(dm.val_set.pairs, 0).stem] == ["beagle_3"]
    train = {_image_path(dm.train_set.pairs, i).stem for i in range(len(dm.train_set))}
    assert train == {"Abyssinian_1", "Abyssinian_2", "beagle_2"}


def test_num_classes_mismatch_is_refused(tmp_path):
    make_ade20k(tmp_path, np.random.default_rng(RNG_SEED))
    with pytest.raises(Exception, match="data.num_classes=151"):  # noqa: B017 - Hydra wraps it
        build("ade20k", tmp_path, num_classes=151)
