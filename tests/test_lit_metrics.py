"""Helen metrics against hand-computed confusion matrices."""

from __future__ import annotations

import math

import pytest
import torch

from portraitseg.classes import CLASS_NAMES
from portraitseg.lit.metrics import HelenMetrics, merged_f1, scores_from_confusion

# (truth, prediction, count): every pixel of a small made-up split.
PAIRS = [
    (0, 0, 10),
    (1, 1, 8), (1, 0, 2), (1, 5, 1),   # skin: 2 missed as background, 1 taken for the right eye
    (2, 2, 3), (2, 3, 1),              # left brow: 1 pixel called right brow (same group)
    (3, 3, 2),
    (4, 4, 2), (4, 1, 2),              # left eye: half missed as skin
    (6, 6, 4),
    (7, 7, 1), (7, 9, 1),              # upper lip: 1 pixel called lower lip (same group)
    (9, 9, 2),
    (10, 10, 5), (10, 0, 1),
]  # right eye (5) never true, inner mouth (8) never true nor predicted


def pixels(pairs=PAIRS) -> tuple[torch.Tensor, torch.Tensor]:
    truth = torch.tensor([t for t, _, n in pairs for _ in range(n)])
    pred = torch.tensor([p for _, p, n in pairs for _ in range(n)])
    return pred.view(1, 1, -1), truth.view(1, 1, -1)


@pytest.fixture
def scores() -> dict[str, float]:
    metric = HelenMetrics()
    metric.update(*pixels())
    return {k: float(v) for k, v in metric.compute().items()}


def test_confusion_matrix_layout():
    metric = HelenMetrics()
    metric.update(*pixels())
    cm = metric.confusion
    assert int(cm.sum()) == 45
    assert int(cm[1, 0]) == 2 and int(cm[0, 1]) == 0, "rows are truth, columns prediction"
    assert int(cm[1, 5]) == 1


@pytest.mark.parametrize(("name", "expected"), [
    ("background", 20 / 23),   # TP 10, FP 3, FN 0
    ("skin", 16 / 21),         # TP 8, FP 2, FN 3
    ("left_brow", 6 / 7),
    ("right_brow", 4 / 5),
    ("left_eye", 4 / 6),
    ("right_eye", 0.0),        # never true, predicted once
    ("nose", 1.0),
    ("upper_lip", 2 / 3),
    ("lower_lip", 4 / 5),
    ("hair", 10 / 11),
])
def test_per_class_f1(scores, name, expected):
    assert scores[f"f1/{name}"] == pytest.approx(expected)


def test_absent_class_is_nan_not_zero(scores):
    assert math.isnan(scores["f1/inner_mouth"]) and math.isnan(scores["iou/inner_mouth"])


def test_group_f1_merges_left_and_right(scores):
    assert scores["f1_brows"] == pytest.approx(1.0)       # L/R confusions stay inside the group
    assert scores["f1_eyes"] == pytest.approx(4 / 7)      # TP 2, FP 1 (skin), FN 2
    assert scores["f1_nose"] == pytest.approx(1.0)
    assert scores["f1_mouth"] == pytest.approx(1.0)       # upper/lower lip swap inside the group


def test_overall_f1_is_one_foreground_class_without_skin_hair_background(scores):
    # brows+eyes+nose+mouth vs rest: TP 16, FN 2 (left eye -> skin), FP 1 (skin -> right eye)
    assert scores["f1_overall"] == pytest.approx(32 / 35)
    # and it is not the mean of the group F1s
    groups = [scores[f"f1_{g}"] for g in ("brows", "eyes", "nose", "mouth")]
    assert scores["f1_overall"] != pytest.approx(sum(groups) / 4)


def test_miou_averages_classes_present_in_truth_or_prediction(scores):
    ious = [10 / 13, 8 / 13, 3 / 4, 2 / 3, 2 / 4, 0 / 1, 1.0, 1 / 2, 2 / 3, 5 / 6]  # 10 classes
    assert scores["miou"] == pytest.approx(sum(ious) / len(ious))
    assert scores["iou/right_eye"] == 0.0


def test_pixel_accuracy_and_subject_iou(scores):
    assert scores["pixel_acc"] == pytest.approx(37 / 45)
    # subject = every non-background class: 35 true subject pixels, 3 of them called background
    assert scores["subject_iou"] == pytest.approx(32 / 35)


def test_subject_iou_counts_background_false_positives():
    cm = torch.zeros(11, 11, dtype=torch.long)
    cm[0, 0], cm[0, 10], cm[10, 10] = 5, 3, 6
    assert float(scores_from_confusion(cm)["subject_iou"]) == pytest.approx(6 / 9)


def test_merged_f1_of_a_single_class_equals_its_f1(scores):
    metric = HelenMetrics()
    metric.update(*pixels())
    cm = metric.confusion.double()
    for c, name in enumerate(CLASS_NAMES):
        if not math.isnan(scores[f"f1/{name}"]):
            assert float(merged_f1(cm, (c,))) == pytest.approx(scores[f"f1/{name}"])


def test_accumulating_batches_equals_one_update_on_everything():
    g = torch.Generator().manual_seed(0)
    preds = torch.randint(0, 11, (6, 9, 7), generator=g)
    truth = torch.randint(0, 11, (6, 9, 7), generator=g)
    split = HelenMetrics()
    for i in range(0, 6, 2):
        split.update(preds[i : i + 2], truth[i : i + 2])
    whole = HelenMetrics()
    whole.update(preds, truth)
    assert torch.equal(split.confusion, whole.confusion)
    a, b = split.compute(), whole.compute()
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], equal_nan=True), key


def test_split_level_score_is_not_a_mean_of_image_scores():
    """One confusion matrix over the split: a tiny bad image weighs by its pixels only."""
    big_pred, big_truth = torch.full((1, 10, 10), 6), torch.full((1, 10, 10), 6)
    small_pred, small_truth = torch.zeros(1, 1, 1, dtype=torch.long), torch.full((1, 1, 1), 6)
    metric = HelenMetrics()
    metric.update(big_pred, big_truth)
    metric.update(small_pred, small_truth)
    assert float(metric.compute()["f1/nose"]) == pytest.approx(200 / 201)


def test_logits_are_reduced_by_argmax():
    logits = torch.zeros(1, 11, 2, 2)
    logits[:, 4] = 1.0
    metric = HelenMetrics()
    metric.update(logits, torch.full((1, 2, 2), 4))
    assert float(metric.compute()["f1/left_eye"]) == 1.0


def test_reset_clears_the_matrix():
    metric = HelenMetrics()
    metric.update(*pixels())
    metric.reset()
    assert int(metric.confusion.sum()) == 0


def test_shape_mismatch_is_named():
    with pytest.raises(ValueError, match=r"preds \(1, 4, 4\) and target \(1, 4, 5\) differ"):
        HelenMetrics().update(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))


def test_other_class_counts_have_generic_names_and_no_helen_groups():
    metric = HelenMetrics(num_classes=2)
    metric.update(torch.tensor([[0, 1, 1, 0]]), torch.tensor([[0, 1, 0, 0]]))
    out = metric.compute()
    assert "f1/class1" in out and "f1_overall" not in out
    assert float(out["f1/class1"]) == pytest.approx(2 / 3)
    assert float(out["subject_iou"]) == pytest.approx(1 / 2)
