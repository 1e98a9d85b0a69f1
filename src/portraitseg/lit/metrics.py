"""Face-parsing metrics over one confusion matrix accumulated across a whole split.

All scores derive from a single ``K x K`` confusion matrix (rows = truth, columns = prediction)
summed over every pixel of the split (and across DDP ranks), never from per-image averages.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from portraitseg.classes import CLASS_NAMES, F1_GROUPS, NUM_CLASSES, OVERALL_CLASSES


def _f1(tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
    denom = 2 * tp + fp + fn
    return torch.where(denom > 0, 2 * tp / denom.clamp(min=1), torch.full_like(tp, float("nan")))


def merged_f1(cm: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """F1 of ``classes`` merged into one foreground class against everything else."""
    idx = torch.tensor(classes, device=cm.device)
    tp = cm[idx][:, idx].sum()
    fn = cm[idx].sum() - tp
    fp = cm[:, idx].sum() - tp
    return _f1(tp, fp, fn)


def scores_from_confusion(cm: torch.Tensor) -> dict[str, torch.Tensor]:
    """Scores from a ``(K, K)`` confusion matrix (rows truth, columns prediction).

    Returns per-class ``f1/<name>`` and ``iou/<name>``, ``miou`` (mean over classes present in
    truth or prediction), ``pixel_acc``, ``subject_iou`` (all non-background vs background) and,
    for the 11 Helen classes, the literature's group F1s (``f1_brows``, ``f1_eyes``, ``f1_nose``,
    ``f1_mouth``) and ``f1_overall`` (brows, eyes, nose and mouth as one foreground class; skin,
    hair and background excluded).
    """
    cm = cm.double()
    k = cm.shape[0]
    tp = cm.diag()
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    union = tp + fp + fn
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    f1 = _f1(tp, fp, fn)
    names = CLASS_NAMES if k == NUM_CLASSES else tuple(f"class{i}" for i in range(k))
    out: dict[str, torch.Tensor] = {}
    for i, name in enumerate(names):
        out[f"f1/{name}"] = f1[i]
        out[f"iou/{name}"] = iou[i]
    out["miou"] = iou.nanmean()
    out["pixel_acc"] = tp.sum() / cm.sum().clamp(min=1)
    out["subject_iou"] = _subject_iou(cm)
    if k == NUM_CLASSES:
        for group, classes in F1_GROUPS.items():
            out[f"f1_{group}"] = merged_f1(cm, classes)
        out["f1_overall"] = merged_f1(cm, OVERALL_CLASSES)
    return out


def _subject_iou(cm: torch.Tensor) -> torch.Tensor:
    tp = cm[1:, 1:].sum()
    union = cm.sum() - cm[0, 0]
    return torch.where(union > 0, tp / union.clamp(min=1), torch.tensor(float("nan"), dtype=cm.dtype))


class HelenMetrics(Metric):
    """Accumulates one confusion matrix; ``compute()`` returns :func:`scores_from_confusion`.

    ``update(preds, target)``: class ids ``(B, H, W)`` (or logits ``(B, K, H, W)``) and truth
    ``(B, H, W)``; truth values ``>= K`` (255: unknown) are skipped. States are summed across
    processes under DDP.
    """

    full_state_update = False

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.add_state(
            "confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(1)
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        k = self.num_classes
        target, preds = target.reshape(-1).long(), preds.reshape(-1).long()
        known = target < k  # 255 marks pixels whose class is unknown
        target, preds = target[known], preds[known]
        idx = target * k + preds
        self.confusion += torch.bincount(idx, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, torch.Tensor]:
        return scores_from_confusion(self.confusion)


def boundary(mask: torch.Tensor) -> torch.Tensor:
    """Inner boundary of binary masks ``(B, 1, H, W)``: pixels with a 4-neighbour outside."""
    m = mask.float()
    eroded = -F.max_pool2d(-F.pad(m, (1, 1, 1, 1), mode="replicate"), 3, 1)
    return (m - eroded) > 0


def person_scores(
    prob: torch.Tensor, target: torch.Tensor, tolerance: float = 0.008
) -> dict[str, torch.Tensor]:
    """Per-image person-matte scores.

    Args:
        prob: ``(B, 1, H, W)`` predicted matte in [0, 1].
        target: ``(B, 1, H, W)`` true matte in [0, 1] (soft allowed).
        tolerance: boundary match distance as a share of the image diagonal (DAVIS: 0.008).

    Returns:
        ``iou`` (masks at 0.5; 1 when both are empty), ``boundary_f`` (F-measure of the mask
        boundaries matched within the tolerance; 1 when both have none) and ``mad`` (mean absolute
        difference of the soft mattes), each ``(B,)``.
    """
    pred, true = prob > 0.5, target > 0.5
    inter = (pred & true).sum((1, 2, 3)).double()
    union = (pred | true).sum((1, 2, 3)).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    h, w = prob.shape[-2:]
    radius = max(1, math.ceil(tolerance * math.hypot(h, w)))
    pb, tb = boundary(pred), boundary(true)
    dilate = lambda b: F.max_pool2d(b.float(), 2 * radius + 1, 1, radius) > 0  # noqa: E731
    n_pred, n_true = pb.sum((1, 2, 3)).double(), tb.sum((1, 2, 3)).double()
    precision = (pb & dilate(tb)).sum((1, 2, 3)).double() / n_pred.clamp(min=1)
    recall = (tb & dilate(pb)).sum((1, 2, 3)).double() / n_true.clamp(min=1)
    f = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall).clamp(min=1e-12),
                    torch.zeros_like(precision))
    f = torch.where((n_pred == 0) & (n_true == 0), torch.ones_like(f), f)
    mad = (prob.double() - target.double()).abs().mean((1, 2, 3))
    return {"iou": iou, "boundary_f": f, "mad": mad}


class PersonMetrics(Metric):
    """Mean over images of :func:`person_scores` (``person_iou``, ``person_boundary_f``,
    ``person_mad``). Images whose target is unknown (negative) are skipped."""

    full_state_update = False

    def __init__(self, tolerance: float = 0.008) -> None:
        super().__init__()
        self.tolerance = tolerance
        for name in ("iou", "boundary_f", "mad", "count"):
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, prob: torch.Tensor, target: torch.Tensor) -> None:
        known = (target >= 0).flatten(1).all(1)
        if not bool(known.any()):
            return
        scores = person_scores(prob[known], target[known], self.tolerance)
        self.iou += scores["iou"].sum()
        self.boundary_f += scores["boundary_f"].sum()
        self.mad += scores["mad"].sum()
        self.count += known.sum()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.count.clamp(min=1)
        return {"person_iou": self.iou / n, "person_boundary_f": self.boundary_f / n,
                "person_mad": self.mad / n}
