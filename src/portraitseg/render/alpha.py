"""Subject alpha for the renderer: class scores -> soft subject mask -> edge-aware full-res alpha.

All functions take and return ``(B, C, H, W)`` tensors, are differentiable with respect to their
tensor inputs, and do not synchronise with the device (value-range checks run on CPU tensors
only, where they cost no synchronisation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from portraitseg.classes import SUBJECT_CLASSES
from portraitseg.config import RANGE_TOLERANCE
from portraitseg.render.blur import check_blur_input, gaussian_blur
from portraitseg.render.guided import guided_filter


def check_range(x: torch.Tensor, name: str, low: float = 0.0, high: float = 1.0, hint: str = "") -> None:
    """Raise ``ValueError`` if a CPU tensor has values outside ``[low, high]`` (+- tolerance).

    Skipped for tensors on an accelerator: reading the values back would synchronise the device.
    """
    if x.device.type != "cpu" or x.numel() == 0 or torch.compiler.is_compiling():
        return
    lo, hi = torch.aminmax(x.detach())
    lo, hi = float(lo), float(hi)
    if not (lo >= low - RANGE_TOLERANCE and hi <= high + RANGE_TOLERANCE):  # also catches NaN
        raise ValueError(f"{name} values must be in [{low}, {high}], got min {lo:.4g}, max {hi:.4g}{hint}")


def check_keep(keep: Sequence[int], num_classes: int) -> tuple[int, ...]:
    """Validate kept class ids against the number of score channels ``K``; returns a tuple."""
    ids = tuple(int(k) for k in keep)
    if not ids:
        raise ValueError("keep must name at least one class to keep sharp")
    bad = [k for k in ids if not 0 <= k < num_classes]
    if bad:
        raise ValueError(
            f"keep classes {bad} do not exist in scores with K={num_classes} channels "
            f"(ids 0..{num_classes - 1}); "
            f"pass keep= a subset of range({num_classes}) (e.g. keep=(1,) for a 2-class person model)"
        )
    return tuple(sorted(set(ids)))


def subject_alpha(
    scores: torch.Tensor,
    keep: Sequence[int] = SUBJECT_CLASSES,
    *,
    from_logits: bool = True,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Soft subject probability: the summed softmax probability of the kept classes.

    Args:
        scores: logits (``from_logits=True``) or probabilities ``(B, K, h, w)``, ``K >= 2``.
        keep: class ids kept sharp (selective blurring), each in ``0 .. K-1``. Default: every Helen
            class except background (use :func:`portraitseg.classes.class_ids` to parse names).
        from_logits: softmax the scores first (computed as a log-sum-exp ratio, stable for any
            logit scale); otherwise ``scores`` must be probabilities in [0, 1] summing to 1.
        size: ``(H, W)`` to resize to (bilinear, ``align_corners=False``); default: keep ``(h, w)``.

    Returns:
        alpha ``(B, 1, H, W)`` in [0, 1].
    """
    check_blur_input(scores, "scores")
    num_classes = scores.shape[1]
    if num_classes < 2:
        raise ValueError(f"scores need K >= 2 class channels, got shape {tuple(scores.shape)}")
    ids = check_keep(keep, num_classes)
    # slices, not a list index: indexing with a Python list would copy an index tensor to the device
    kept = (
        torch.cat([scores[:, i : i + 1] for i in ids], 1) if len(ids) > 1 else scores[:, ids[0] : ids[0] + 1]
    )
    if from_logits:
        if scores.dtype in (torch.float16, torch.bfloat16):
            scores, kept = scores.float(), kept.float()
        alpha = torch.exp(kept.logsumexp(1, keepdim=True) - scores.logsumexp(1, keepdim=True))
    else:
        check_range(scores, "probs", hint="; pass logits with from_logits=True, or softmax them first")
        alpha = kept.sum(1, keepdim=True).clamp(0.0, 1.0)
    if size is not None and tuple(alpha.shape[-2:]) != tuple(size):
        alpha = F.interpolate(alpha, size=tuple(size), mode="bilinear", align_corners=False)
    return alpha


def refine_alpha(
    alpha: torch.Tensor,
    image: torch.Tensor,
    radius: int,
    *,
    eps: float = 1e-3,
    subsample: int | None = None,
) -> torch.Tensor:
    """Snap a (upsampled, blurry) alpha to the image's edges with a fast guided filter.

    The colour guided filter (He et al. 2010/2015, :func:`portraitseg.render.guided.guided_filter`):
    ``alpha`` is locally a linear function of
    the RGB image in ``(2 radius + 1)^2`` windows, solved at ``1 / subsample`` resolution and the
    coefficients upsampled (``subsample`` defaults to ``max(1, radius // 4)``, keeping a 4-pixel
    window radius at low resolution). ``eps`` (in squared image units) sets the smallest edge
    contrast that is followed. The result is clamped to [0, 1].

    Args:
        alpha: ``(B, 1, H, W)`` in [0, 1].
        image: guidance ``(B, 3, H, W)`` in [0, 1].
        radius: window radius in pixels; 0 returns ``alpha`` unchanged.

    Returns:
        refined alpha ``(B, 1, H, W)``.
    """
    if alpha.shape[0] != image.shape[0] or alpha.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"alpha {tuple(alpha.shape)} and image {tuple(image.shape)} must share B, H, W")
    radius = int(radius)
    if radius < 0:
        raise ValueError(f"refine radius must be >= 0, got {radius}")
    if radius == 0:
        return alpha
    subsample = max(1, radius // 4) if subsample is None else int(subsample)
    subsample = max(1, min(subsample, image.shape[-2], image.shape[-1]))
    return guided_filter(image, alpha, radius, eps, subsample).clamp(0.0, 1.0)


def feather_alpha(alpha: torch.Tensor, sigma: float, method: str = "auto") -> torch.Tensor:
    """Soften the alpha ``(B, 1, H, W)`` transition with a Gaussian of ``sigma`` pixels (0 = off)."""
    if sigma < 0:
        raise ValueError(f"feather sigma must be >= 0, got {sigma}")
    return alpha if sigma == 0 else gaussian_blur(alpha, sigma, method)  # type: ignore[arg-type]
