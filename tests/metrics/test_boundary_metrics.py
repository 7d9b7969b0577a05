import pytest
import torch

from tests.metrics import reference as ref
from upbench.metrics import BoundaryFScore, BoundaryIoU


def run(metric, preds, target):
    metric.update(preds, target)
    return metric.compute().item()


@pytest.mark.parametrize(
    "metric",
    [
        BoundaryIoU(3, dilation=1),
        BoundaryIoU(3),
        BoundaryFScore(3, tolerance=0),
        BoundaryFScore(3),
    ],
)
def test_perfect_prediction_scores_one(metric):
    _, target = ref.square_scene()
    _, line, _ = ref.line_scene()
    target = torch.cat([target, line.where(line == 2, target[0])])
    assert run(metric, target.clone(), target) == pytest.approx(1.0)


def test_boundary_iou_square_shifted_by_one_pixel():
    # d = 1, image border counts as contour.
    # Class 1: G_d = 4x4 square minus its 2x2 core = 12 px, P_d likewise (shifted). Both squares
    #   share cols 3..5 (12 px); removing either core (rows 3..4, cols 3..5: 6 px) leaves 6 px in
    #   both bands. Union 12 + 12 - 6 = 18 -> 6/18 = 1/3.
    # Class 0: every target class-0 pixel is on the frame or next to the square: G_d = 48.
    #   P_d = 28 frame + 14 next to the shifted square (rows 1 and 6, cols 2..6; col 2 rows
    #   2..5) = 42; col 2 rows 2..5 belong to the target square, so the intersection is
    #   28 + 10 = 38 and the union 48 + 42 - 38 = 52 -> 38/52 = 19/26.
    # Mean (1/3 + 19/26) / 2 = 83/156.
    preds, target = ref.square_scene()
    assert run(BoundaryIoU(2, dilation=1), preds, target) == pytest.approx(83 / 156)


@pytest.mark.parametrize("tolerance,expected", [(0, 0.5), (1, 1.0)])
def test_boundary_f_square_shifted_by_one_pixel(tolerance, expected):
    # Class 1 contours: 12-px rings; they share 6 px (rows 2 and 5, cols 3..5) -> P = R = 1/2 at
    # t = 0. Class 0 contours: the 20-px rings just outside each square; shared are rows 1 and 6,
    # cols 2..6 (10 px) -> P = R = 1/2. At t = 1 every contour pixel has a counterpart at
    # Chebyshev distance <= 1 (the shift is one pixel), so P = R = 1 for both classes.
    preds, target = ref.square_scene()
    assert run(BoundaryFScore(2, tolerance=tolerance), preds, target) == pytest.approx(expected)


def test_missing_thin_line_drops_boundary_metrics():
    # Class 2 (the line, 6 px): G_d = the line, P_d empty -> IoU 0.
    # Class 0 (d = 1): G_d = 28 frame px + cols 3 and 5 at rows 1..6 (12 px) = 40; P_d = frame
    # (28), all in G_d -> 28/40 = 0.7. Mean over {0, 2} = 0.35 (class 1 absent: left out).
    preds, target, _ = ref.line_scene()
    assert run(BoundaryIoU(3, dilation=1), preds, target) == pytest.approx(0.35)
    # The prediction has no contour at all, so R = 0 for classes 0 and 2: F = 0.
    assert run(BoundaryFScore(3, tolerance=1), preds, target) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "make,expected",
    [
        (lambda k: BoundaryIoU(k, dilation=1), 83 / 156),
        (lambda k: BoundaryFScore(k, tolerance=0), 0.5),
    ],
)
def test_classes_absent_everywhere_are_left_out_of_the_mean(make, expected):
    preds, target = ref.square_scene()
    # Classes 2..6 occur neither in the prediction nor in the target.
    assert run(make(7), preds, target) == pytest.approx(expected)


def test_class_only_predicted_counts_as_zero():
    # Class 2 predicted (a whole 8x8 image) but absent from the target: its IoU is 0 and it is
    # part of the mean; class 0 gets IoU 0 as well (predicted nowhere).
    target = torch.zeros(1, 8, 8, dtype=torch.long)
    preds = torch.full_like(target, 2)
    assert run(BoundaryIoU(3, dilation=1), preds, target) == 0.0


def test_boundary_iou_ignores_void_pixels():
    # Target column 7 is void; the prediction equals the square target except that it calls
    # column 7 class 1. Column 7 is not counted; the class-0 contour along it (col 6) exists in
    # both maps (next to void in the target, next to class 1 in the prediction), every other
    # band pixel is unchanged -> 1.0. Without the void, class 1 gains an 8-px band in the
    # prediction only: class 1 IoU 12/20 and class 0 IoU 40/48 (col 7 leaves its band).
    preds, target = ref.square_scene()
    preds = target.clone()
    preds[0, :, 7] = 1
    target[0, :, 7] = 255
    assert run(BoundaryIoU(2, dilation=1), preds, target) == pytest.approx(1.0)
    target[0, :, 7] = 0
    expected = (12 / 20 + 40 / 48) / 2
    assert run(BoundaryIoU(2, dilation=1), preds, target) == pytest.approx(expected)


def test_boundary_f_ignores_void_pixels():
    # Void column 7 in the target; the prediction's contour there is not counted, and the
    # prediction's class-0 contour along col 6 matches the target's (next to void) -> 1.0.
    preds, target = ref.square_scene()
    preds = target.clone()
    preds[0, :, 7] = 1
    target[0, :, 7] = 255
    assert run(BoundaryFScore(2, tolerance=0), preds, target) == pytest.approx(1.0)


def test_default_dilation_is_two_percent_of_the_diagonal():
    # 60 x 80 image: diagonal 100 px, d = round(0.02 * 100) = 2 px. A square shifted by 3 px
    # scores differently at d = 1, 2 and 3.
    target = torch.zeros(1, 60, 80, dtype=torch.long)
    target[0, 20:40, 25:55] = 1
    preds = target.roll(3, dims=2)
    default = run(BoundaryIoU(2), preds, target)
    assert default == pytest.approx(ref.boundary_iou(preds, target, 2, 2))
    for other in (1, 3):
        assert default != pytest.approx(ref.boundary_iou(preds, target, 2, other))


@pytest.mark.parametrize("d", [1, 2])
def test_boundary_iou_matches_pixel_loop_reference(d):
    preds, target = ref.random_scenes(2, 10, 13, num_classes=4, seed=d)
    expected = ref.boundary_iou(preds, target, 4, d)
    assert run(BoundaryIoU(4, dilation=d), preds, target) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("t", [0, 1, 2])
def test_boundary_f_matches_pixel_loop_reference(t):
    preds, target = ref.random_scenes(2, 10, 13, num_classes=4, seed=10 + t)
    expected = ref.boundary_f(preds, target, 4, t)
    assert run(BoundaryFScore(4, tolerance=t), preds, target) == pytest.approx(expected, rel=1e-6)
