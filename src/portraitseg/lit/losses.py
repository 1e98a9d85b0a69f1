"""Training losses with unknown targets masked out: Helen parse CE, its Lovasz-softmax term and the
person-matte loss.

A pixel whose parse is unknown holds :data:`IGNORE` (255); a pixel whose person target is unknown
holds a negative value. Neither contributes to any term (it is never read as background).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = 255
#: pixel errors ``|1[class] - p|`` at or below this are left out of the Lovasz sort (a confident,
#: trained model has most pixels there); they would add at most this much to the loss
LOVASZ_TAIL = 1e-3


def parse_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None = None,
    label_smoothing: float = 0.0,
    ohem: float | None = None,
) -> torch.Tensor:
    """Softmax cross-entropy over the known pixels.

    Args:
        logits: ``(B, K, H, W)``.
        target: ``(B, H, W)`` class ids, :data:`IGNORE` where unknown.
        weight: per-class weights ``(K,)`` (the mean is weighted as ``F.cross_entropy`` does).
        label_smoothing: as for ``F.cross_entropy``.
        ohem: online hard example mining: average only the hardest ``ohem`` share of the known
            pixels (e.g. 0.25); ``None``: all of them.

    Returns:
        a scalar; 0 (still attached to the graph) when no pixel is known.
    """
    per_pixel = F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE,
                                label_smoothing=label_smoothing, reduction="none")
    valid = target != IGNORE
    if ohem is not None:
        if not 0 < ohem <= 1:
            raise ValueError(f"loss.ohem must be in (0, 1], got {ohem}")
        k = max(1, int(ohem * int(valid.sum())))
        hardest = per_pixel.masked_fill(~valid, -1.0).flatten().topk(k).values
        return hardest.clamp(min=0).mean()
    if weight is not None:
        denom = weight[target.clamp(max=logits.shape[1] - 1)].masked_fill(~valid, 0).sum()
    else:
        denom = valid.sum()
    return per_pixel.sum() / denom.clamp(min=1e-6)


def lovasz_softmax(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovasz-softmax loss (Berman et al., CVPR 2018): a convex surrogate of ``1 - IoU`` per class.

    Computed over the known pixels of the whole batch, averaged over the classes present in the
    target. With one-hot probabilities it equals the mean of ``1 - IoU`` of those classes exactly; it
    weighs a thin class (a lip, a brow) by its own area, where cross-entropy weighs it by its share
    of all pixels.

    Args:
        logits: ``(B, K, H, W)``.
        target: ``(B, H, W)`` class ids, :data:`IGNORE` where unknown.

    Returns:
        a scalar; 0 (still attached to the graph) when no pixel is known.
    """
    if logits.ndim != 4 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise ValueError(f"lovasz_softmax expects logits (B, K, H, W) and target (B, H, W), got "
                         f"{tuple(logits.shape)} and {tuple(target.shape)}")
    valid = target != IGNORE
    present = target[valid].unique()
    if present.numel() == 0:
        return logits.sum() * 0.0
    classes = torch.arange(logits.shape[1], device=target.device)
    fg = target[:, None] == classes[None, :, None, None]  # (B, K, H, W); IGNORE is no class
    errors = (fg.to(logits.dtype) - logits.softmax(1)).abs()
    weights = _lovasz_weights(errors.detach(), fg, valid, present)
    return (errors * weights).sum() / present.numel()


def _lovasz_weights(errors: torch.Tensor, fg: torch.Tensor, valid: torch.Tensor,
                    present: torch.Tensor) -> torch.Tensor:
    """The Lovasz extension's weight of each pixel error ``(B, K, H, W)`` (no gradient).

    Each present class's errors over the known pixels, sorted in decreasing order, get the steps of
    the Jaccard loss along that order; other classes and unknown pixels get 0. Only the errors above
    :data:`LOVASZ_TAIL` enter the sort: their prefix and its steps are those of the full sort, and the
    tail (weight 0) would add at most ``LOVASZ_TAIL`` to the loss.
    """
    b, k, h, w = errors.shape
    weights = errors.new_zeros(k, b * h * w)
    for c in present.tolist():
        e, f = errors[:, c].flatten(), fg[:, c].flatten()
        idx = ((e > LOVASZ_TAIL) & valid.flatten()).nonzero().squeeze(1)
        order = idx[e[idx].argsort(descending=True)]
        f_sorted = f[order].to(e.dtype)
        total = f.sum().to(e.dtype)
        jaccard = 1.0 - (total - f_sorted.cumsum(0)) / (total + (1.0 - f_sorted).cumsum(0))
        weights[c, order] = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return weights.view(k, b, h, w).transpose(0, 1)


def person_loss(logit: torch.Tensor, target: torch.Tensor, iou_weight: float = 1.0) -> torch.Tensor:
    """BCE on soft targets plus a soft-IoU term, over the known pixels.

    Args:
        logit: ``(B, 1, H, W)`` person-matte logits.
        target: ``(B, 1, H, W)`` soft matte in [0, 1], negative where unknown.
        iou_weight: weight of the soft-IoU term ``1 - sum(p t) / sum(p + t - p t)`` (per image,
            averaged over images with known pixels; +1 smoothing so an empty matte is valid).

    Returns:
        a scalar; 0 (still attached to the graph) when no pixel is known.
    """
    valid = (target >= 0).to(logit.dtype)
    t = target.clamp(min=0).to(logit.dtype)
    bce = F.binary_cross_entropy_with_logits(logit, t, reduction="none")
    loss = (bce * valid).sum() / valid.sum().clamp(min=1)
    if iou_weight:
        p = logit.sigmoid() * valid
        t = t * valid
        inter = (p * t).sum((1, 2, 3))
        union = (p + t - p * t).sum((1, 2, 3))
        has = (valid.sum((1, 2, 3)) > 0).to(logit.dtype)
        iou = (inter + 1) / (union + 1)
        loss = loss + iou_weight * ((1 - iou) * has).sum() / has.sum().clamp(min=1)
    return loss
