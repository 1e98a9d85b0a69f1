"""Face-parsing metrics over one confusion matrix accumulated across a whole split.

All scores derive from a single ``K x K`` confusion matrix (rows = truth, columns = prediction)
summed over every pixel of the split (and across DDP ranks), never from per-image averages.
"""

from __future__ import annotations

import torch
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
    ``(B, H, W)``. States are summed across processes under DDP.
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
        idx = target.reshape(-1).long() * k + preds.reshape(-1).long()
        self.confusion += torch.bincount(idx, minlength=k * k).reshape(k, k)

    def compute(self) -> dict[str, torch.Tensor]:
        return scores_from_confusion(self.confusion)
