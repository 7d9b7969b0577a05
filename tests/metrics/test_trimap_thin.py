import pytest
from torchmetrics import MetricCollection

from tests.metrics import reference as ref
from upbench.metrics import ThinStructureRecall, TrimapMeanIoU


def test_trimap_perfect_prediction():
    _, target = ref.square_scene()
    metric = TrimapMeanIoU(2, widths=(1, 3))
    metric.update(target.clone(), target)
    assert {w: v.item() for w, v in metric.compute().items()} == {
        "trimap_mIoU_w1": 1.0,
        "trimap_mIoU_w3": 1.0,
    }


def test_trimap_square_shifted_by_one_pixel():
    # w = 1: band = 20 px just outside the square + 12 px inner ring = 32 px.
    #   Class 1: target 12 (the inner ring); predicted 12 (the shifted square minus the 4 px
    #   (rows 3..4, cols 3..4) of the target's core, which are outside the band); TP = the
    #   overlap cols 3..5 (12 px) minus that core = 8 -> 8 / (12 + 12 - 8) = 1/2.
    #   Class 0: target 20, predicted 32 - 12 = 20, TP 16 -> 16/24 = 2/3. Mean 7/12.
    # w >= 2: every pixel of the 8x8 image is within 2 px of a label change, so this is the
    #   plain mIoU: class 1 12/20, class 0 44/52 -> (3/5 + 11/13) / 2.
    preds, target = ref.square_scene()
    metric = TrimapMeanIoU(2, widths=(1, 2, 8))
    metric.update(preds, target)
    result = metric.compute()
    assert list(result) == ["trimap_mIoU_w1", "trimap_mIoU_w2", "trimap_mIoU_w8"]
    assert result["trimap_mIoU_w1"].item() == pytest.approx(7 / 12)
    assert result["trimap_mIoU_w2"].item() == pytest.approx((3 / 5 + 11 / 13) / 2)
    assert result["trimap_mIoU_w8"].item() == pytest.approx((3 / 5 + 11 / 13) / 2)


def test_trimap_leaves_out_absent_classes_and_void():
    preds, target = ref.square_scene()
    # Void on target column 0 with class 3 predicted there: not counted, so class 3 (like 2 and
    # 4) never occurs and is left out. The void column is a label change for column 1, adding
    # its rows 0 and 7 (class 0, predicted 0; rows 1..6 were already in) to the w = 1 band:
    # class 0 target 20 + 2, predicted 20 + 2, TP 16 + 2 -> 18 / 26 = 9/13; class 1 stays 1/2.
    preds[0, :, 0] = 3
    target[0, :, 0] = 255
    metric = TrimapMeanIoU(5, widths=(1,))
    metric.update(preds, target)
    assert metric.compute()["trimap_mIoU_w1"].item() == pytest.approx((9 / 13 + 1 / 2) / 2)


@pytest.mark.parametrize("w", [1, 2, 3])
def test_trimap_matches_pixel_loop_reference(w):
    preds, target = ref.random_scenes(2, 11, 12, num_classes=3, seed=20 + w)
    metric = TrimapMeanIoU(3, widths=(w,))
    metric.update(preds, target)
    assert metric.compute()[f"trimap_mIoU_w{w}"].item() == pytest.approx(
        ref.trimap_miou(preds, target, 3, w)
    )


def test_thin_recall_missing_line_is_zero_and_found_line_is_one():
    preds, target, thin = ref.line_scene()
    metric = ThinStructureRecall(3)
    metric.update(preds, target, thin)
    assert metric.compute().item() == 0.0
    metric.reset()
    metric.update(target.clone(), target, thin)
    assert metric.compute().item() == 1.0


def test_thin_recall_counts_pixels_and_skips_void():
    # Line of 6 px: rows 1..2 void, rows 3..4 predicted right, rows 5..6 wrong -> 2 / 4.
    preds, target, thin = ref.line_scene()
    target[0, 1:3, 4] = 255
    preds[0, 3:5, 4] = 2
    preds[0, 5:7, 4] = 1
    metric = ThinStructureRecall(3)
    metric.update(preds, target, thin)
    assert metric.compute().item() == pytest.approx(0.5)


def test_thin_recall_rejects_a_non_boolean_mask():
    preds, target, thin = ref.line_scene()
    with pytest.raises(ValueError, match="bool mask"):
        ThinStructureRecall(3).update(preds, target, thin.long())


def test_trimap_results_flatten_into_a_prefixed_metric_collection():
    preds, target = ref.square_scene()
    collection = MetricCollection({"trimap": TrimapMeanIoU(2, widths=(1, 2))}, prefix="val/")
    collection.update(preds, target)
    result = collection.compute()
    assert set(result) == {"val/trimap_mIoU_w1", "val/trimap_mIoU_w2"}
    assert result["val/trimap_mIoU_w1"].item() == pytest.approx(7 / 12)
