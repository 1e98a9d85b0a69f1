"""Figures shared by training-time logging, ``eval.py`` and the render CLI."""

from __future__ import annotations

import numpy as np
import torch

from portraitseg.classes import colorize


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(3, H, W)`` float in [0, 1] -> ``(H, W, 3)`` uint8."""
    return (image.detach().float().clamp(0, 1) * 255 + 0.5).byte().permute(1, 2, 0).cpu().numpy()


def overlay(image: np.ndarray, label: np.ndarray, opacity: float = 0.55) -> np.ndarray:
    """Blend the class colours of ``label`` ``(H, W)`` over ``image`` ``(H, W, 3)`` uint8."""
    colours = colorize(label).astype(np.float32)
    mask = (label > 0)[..., None]
    out = np.where(mask, (1 - opacity) * image + opacity * colours, image)
    return out.round().astype(np.uint8)


def prediction_grid(
    images: torch.Tensor,
    targets: torch.Tensor,
    preds: torch.Tensor,
    portraits: torch.Tensor | None = None,
    mattes: torch.Tensor | None = None,
) -> np.ndarray:
    """Rows of (image | ground truth overlay | prediction overlay [| person matte] [| portrait])
    as ``(H', W', 3)`` uint8.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1]; targets, preds: ``(B, H, W)`` class ids (targets of
            255, unknown, are drawn as background);
        portraits: optional ``(B, 3, H, W)`` in [0, 1] rendered from the predictions.
        mattes: optional predicted person mattes ``(B, 1, H, W)`` in [0, 1] (drawn in gray).
    """
    rows = []
    for i, (image, target, pred) in enumerate(zip(images, targets, preds, strict=True)):
        img = to_uint8(image)
        t, p = target.cpu().numpy(), pred.cpu().numpy()
        panels = [img, overlay(img, np.where(t == 255, 0, t)), overlay(img, p)]
        if mattes is not None:
            panels.append(np.repeat(to_uint8(mattes[i]), 3, axis=2))
        if portraits is not None:
            panels.append(to_uint8(portraits[i]))
        rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows, axis=0)
