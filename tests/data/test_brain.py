"""MNI152 brain slices: shapes, the 4 derived tissue classes, contiguous disjoint splits."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch

pytest.importorskip("nilearn")

from upbench.data.brain import BrainDataModule, contiguous_splits  # noqa: E402

pytestmark = pytest.mark.slow  # loading the three 1 mm volumes takes ~5-9 s on 2 shared cores


@pytest.fixture(scope="module")
def brain():
    dm = BrainDataModule(image_size=192, batch_size=4)
    dm.setup("fit")
    return dm


def test_shapes_and_classes(brain):
    batch = next(iter(brain.train_dataloader()))
    assert batch["image"].shape == (4, 3, 192, 192) and batch["image"].dtype == torch.float32
    assert batch["mask"].shape == (4, 192, 192) and batch["mask"].dtype == torch.int64
    # The 3 channels are one grey image replicated for RGB backbones.
    assert torch.equal(batch["image"][:, 0], batch["image"][:, 2])
    for split in (brain.train_set, brain.val_set, brain.test_set):
        assert set(torch.unique(split.masks).tolist()) == {0, 1, 2, 3}
    # Background exactly where the (normalised) T1 is at its minimum, i.e. intensity 0.
    image, mask = brain.train_set.images[:, 0], brain.train_set.masks
    assert torch.equal(mask == 0, image == image.min())
    # z-scored with the training slices' statistics.
    assert abs(image.mean().item()) < 1e-3 and abs(image.std().item() - 1) < 1e-3
    assert len(brain.class_names) == len(brain.palette) == brain.num_classes == 4


def test_labels_follow_the_argmax_rule(brain):
    from nilearn import datasets

    z = int(brain.val_set.slice_index[3])
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()[:, :, z]
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()[:, :, z]
    t1 = datasets.load_mni152_template(resolution=1).get_fdata()[:, :, z]
    expected = np.zeros_like(t1, dtype=np.int64)
    for i, j in zip(*np.nonzero(t1 > 0), strict=True):  # one voxel at a time, from the rule
        probabilities = [max(1 - gm[i, j] - wm[i, j], 0), gm[i, j], wm[i, j]]
        expected[i, j] = 1 + int(np.argmax(probabilities))
    expected = np.flipud(expected.T)  # (x, y) -> rows = anterior to posterior
    # 233 x 197 centre-cropped to 192 x 192: rows 20..211, columns 2..193.
    np.testing.assert_array_equal(brain.val_set.masks[3].numpy(), expected[20:212, 2:194])


def test_two_mm_voxels_are_the_blocks_of_the_1_mm_template():
    """resolution=2, one voxel at a time from the definition: a 2 mm voxel is brain when more
    than 4 of its 8 1 mm voxels are, its tissue is the argmax of the probabilities summed over
    those, and its T1 is the block's mean (z-scored: an affine map of it)."""
    from nilearn import datasets

    dm = BrainDataModule(resolution=2, image_size=96, batch_size=4)
    dm.setup("fit")
    assert dm.train_set.images.shape[1:] == (3, 96, 96)
    z = int(dm.test_set.slice_index[2])
    block = slice(2 * z, 2 * z + 2)
    gm = datasets.load_mni152_gm_template(resolution=1).get_fdata()[:, :, block]
    wm = datasets.load_mni152_wm_template(resolution=1).get_fdata()[:, :, block]
    t1 = datasets.load_mni152_template(resolution=1).get_fdata()[:, :, block]
    expected_mask = np.zeros((98, 116), dtype=np.int64)
    expected_t1 = np.zeros((98, 116))
    for i in range(98):
        for j in range(116):
            voxels = [(2 * i + a, 2 * j + b, c) for a in (0, 1) for b in (0, 1) for c in (0, 1)]
            expected_t1[i, j] = sum(t1[v] for v in voxels) / 8
            inside = [v for v in voxels if t1[v] > 0]
            if len(inside) > 4:
                summed = [sum(max(1 - gm[v] - wm[v], 0) for v in inside)]
                summed += [sum(gm[v] for v in inside), sum(wm[v] for v in inside)]
                expected_mask[i, j] = 1 + int(np.argmax(summed))
    # (x, y) -> rows = anterior to posterior; 116 x 98 centre-cropped to 96: rows 10..105,
    # columns 1..96.
    expected_mask = np.flipud(expected_mask.T)[10:106, 1:97]
    expected_t1 = np.flipud(expected_t1.T)[10:106, 1:97]
    np.testing.assert_array_equal(dm.test_set.masks[2].numpy(), expected_mask)
    image = dm.test_set.images[2, 0].numpy().astype(np.float64)
    slope, intercept = np.polyfit(expected_t1.ravel(), image.ravel(), 1)
    np.testing.assert_allclose(image, slope * expected_t1 + intercept, atol=1e-4)
    # Nothing outside the brain is labelled: every slice has background round it.
    for split in (dm.train_set, dm.val_set, dm.test_set):
        assert set(torch.unique(split.masks).tolist()) == {0, 1, 2, 3}
        assert (split.masks[:, 0, :] == 0).all() and (split.masks[:, :, 0] == 0).all()
    with pytest.raises(ValueError, match=r"data.image_size=80 .* 98 x 116 .* use 91 or more"):
        BrainDataModule(resolution=2, image_size=80).setup()


def test_splits_are_contiguous_disjoint_ordered_blocks(brain):
    index = [s.slice_index.tolist() for s in (brain.train_set, brain.val_set, brain.test_set)]
    for block in index:
        assert block == list(range(block[0], block[-1] + 1))
    assert index[0][-1] + brain.gap < index[1][0] and index[1][-1] + brain.gap < index[2][0]
    sizes = np.array([len(b) for b in index])
    assert np.allclose(sizes / sizes.sum(), (0.7, 0.15, 0.15), atol=0.02)


def test_contiguous_splits_by_hand():
    # 24 items, gap 2 -> 20 usable: 14 / 3 / 3.
    assert contiguous_splits(24, (0.7, 0.15, 0.15), 2) == [
        range(0, 14),
        range(16, 19),
        range(21, 24),
    ]


def test_bad_options_and_missing_nilearn(monkeypatch):
    with pytest.raises(ValueError, match="split_fractions"):
        BrainDataModule(split_fractions=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match=r"data.image_size=160 crops .* use 182 or more"):
        BrainDataModule(image_size=160).setup()
    with pytest.raises(ValueError, match=r"data.resolution must be a positive integer, got 0"):
        BrainDataModule(resolution=0)
    real_import = builtins.__import__

    def no_nilearn(name, *args, **kwargs):
        if name == "nilearn":
            raise ImportError("No module named 'nilearn'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_nilearn)
    with pytest.raises(ImportError, match=r"pip install 'upbench\[brain\]'"):
        BrainDataModule()


def test_num_classes_override_is_checked():
    assert BrainDataModule(num_classes=4).num_classes == 4  # the dataset's own count is accepted
    with pytest.raises(ValueError, match=r"data.num_classes=5 but BrainDataModule has 4 classes"):
        BrainDataModule(num_classes=5)
