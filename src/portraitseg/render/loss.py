"""Render loss: an optional training term that scores a segmentation by the portrait it produces."""

from __future__ import annotations

from collections.abc import Callable

import torch

from portraitseg.render.alpha import check_range

Renderer = Callable[..., tuple[torch.Tensor, torch.Tensor]]


def render_loss(
    image: torch.Tensor, probs: torch.Tensor, target_mask: torch.Tensor, renderer: Renderer
) -> torch.Tensor:
    """Mean L1 between the portrait rendered from predicted probabilities and from the ground truth.

    The reference portrait uses the one-hot ``target_mask`` as probabilities through the same
    ``renderer`` (same keep classes, blur, refinement) and carries no gradient; the prediction's
    gradient flows back through alpha into ``probs``. Errors therefore cost in proportion to what
    they do to the picture: a missed hair strand over a background of the same colour is cheap,
    one over a contrasting background is not. Off by default in training; when enabled it is
    added to the segmentation loss with a weight (``loss.render_weight`` of the LightningModule).

    Args:
        image: ``(B, 3, H, W)`` in [0, 1], at the resolution of ``probs`` or higher.
        probs: predicted class probabilities ``(B, K, h, w)`` (softmax of the logits).
        target_mask: ground-truth class ids ``(B, h, w)``, integer, each in ``0 .. K-1``.
        renderer: a :class:`~portraitseg.render.PortraitRenderer` (or any callable with its
            signature ``renderer(image, probs=...) -> (portrait, alpha)``).

    Returns:
        scalar loss tensor.
    """
    if probs.ndim != 4:
        raise ValueError(f"probs must have shape (B, K, h, w), got {tuple(probs.shape)}")
    if (
        target_mask.ndim != 3
        or target_mask.shape[0] != probs.shape[0]
        or target_mask.shape[-2:] != probs.shape[-2:]
    ):
        raise ValueError(
            f"target_mask must have shape (B, h, w) = {(probs.shape[0], *probs.shape[-2:])} to match probs, "
            f"got {tuple(target_mask.shape)}"
        )
    if target_mask.is_floating_point() or target_mask.dtype == torch.bool:
        raise TypeError(f"target_mask must hold integer class ids, got {target_mask.dtype}")
    num_classes = probs.shape[1]
    check_range(target_mask, "target_mask", 0, num_classes - 1, hint=f" (class ids for K={num_classes})")
    classes = torch.arange(num_classes, device=target_mask.device).view(1, -1, 1, 1)
    one_hot = (target_mask.unsqueeze(1) == classes).to(probs.dtype)
    with torch.no_grad():
        reference, _ = renderer(image, probs=one_hot)
    portrait, _ = renderer(image, probs=probs)
    return (portrait - reference).abs().mean()
