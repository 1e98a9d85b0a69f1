"""The subject alpha: what a portrait keeps sharp, from a parse and a person matte (one formula).

With a person matte (``subject="person"``)::

    alpha = max(person, P(kept)) * (1 - P(dropped))

and without one (``subject="face"``, the paper) ``alpha = P(kept)``. ``P(kept)`` is the summed
probability of the kept classes, ``P(dropped)`` that of the non-background classes not kept
(blurred even inside the person: selective blurring); kept classes are sharp even outside it.

:func:`combine_alpha` is the formula on either numpy arrays (the onnxruntime runner, which imports
no PyTorch) or torch tensors (the pipeline, differentiable); :func:`class_masks` the class
weights both sum with; :func:`parse_alpha` the whole step on torch tensors, :func:`render_parse`
that step and a render (eval figures, training-time grids). This module imports numpy only
(PyTorch on first use by :func:`parse_alpha` and :func:`render_parse`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


def class_masks(keep: Sequence[int], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, dropped)`` ``(K,)`` float32 masks: the kept classes, and the non-background
    classes not kept.

    Raises:
        ValueError: a class id outside ``0 .. K-1``, or nothing kept.
    """
    ids = sorted({int(k) for k in keep})
    if not ids or ids[0] < 0 or ids[-1] >= num_classes:
        raise ValueError(f"keep={tuple(keep)}: class ids must be in 0..{num_classes - 1} (at least one)")
    kept = np.zeros(num_classes, np.float32)
    kept[ids] = 1.0
    dropped = 1.0 - kept
    dropped[0] = 0.0
    return kept, dropped


def combine_alpha(p_kept: Any, p_dropped: Any = None, person: Any = None) -> Any:
    """The subject formula on probabilities of one grid, numpy arrays or torch tensors alike.

    Args:
        p_kept: ``P(kept)``, e.g. ``(B, 1, h, w)`` (any shape the others broadcast with).
        p_dropped: ``P(dropped)`` (ignored without ``person``; None: nothing dropped).
        person: person-matte probability, or None (then ``alpha = P(kept)``).

    Returns:
        alpha in [0, 1], of ``p_kept``'s kind (numpy or torch).
    """
    xp = sys.modules[type(p_kept).__module__.split(".")[0]]  # numpy or torch: same names below
    if person is None:
        return xp.clip(p_kept, 0.0, 1.0)
    alpha = xp.maximum(person, p_kept)
    if p_dropped is not None:
        alpha = alpha * (1.0 - p_dropped)
    return xp.clip(alpha, 0.0, 1.0)


def parse_alpha(
    probs: torch.Tensor, person: torch.Tensor | None, kept: torch.Tensor, dropped: torch.Tensor,
    subject: str = "person",
) -> torch.Tensor:
    """Subject alpha from a parse and a person matte (sync-free, differentiable).

    Args:
        probs: class probabilities ``(B, K, h, w)``.
        person: person probability ``(B, 1, h', w')`` (resized to ``(h, w)``) or ``None``.
        kept, dropped: ``(K,)`` masks of :func:`class_masks` (as tensors, on ``probs``' device).
        subject: ``face``: the kept classes only; otherwise :func:`combine_alpha` with the matte
            (without a matte: the kept classes).

    Returns:
        alpha ``(B, 1, h, w)`` in [0, 1].
    """
    import torch
    import torch.nn.functional as F

    if probs.ndim != 4 or kept.shape != (probs.shape[1],) or dropped.shape != kept.shape:
        raise ValueError(f"probs must be (B, K, h, w) with (K,) masks, got probs {tuple(probs.shape)}, "
                         f"kept {tuple(kept.shape)}, dropped {tuple(dropped.shape)}")
    p_kept = torch.einsum("bkhw,k->bhw", probs, kept.to(probs.dtype))[:, None]
    if person is None or subject == "face":
        return combine_alpha(p_kept)
    if tuple(person.shape[-2:]) != tuple(probs.shape[-2:]):
        person = F.interpolate(person, size=tuple(probs.shape[-2:]), mode="bilinear", align_corners=False)
    p_drop = torch.einsum("bkhw,k->bhw", probs, dropped.to(probs.dtype))[:, None]
    return combine_alpha(p_kept, p_drop, person.to(probs.dtype))


def render_parse(
    renderer: torch.nn.Module, image: torch.Tensor, probs: torch.Tensor, person: torch.Tensor | None = None,
    subject: str = "person",
) -> tuple[torch.Tensor, torch.Tensor]:
    """The pipeline's render step on an existing parse (eval figures, training-time grids).

    Args:
        renderer: a :class:`~portraitseg.render.PortraitRenderer` (its ``keep``).
        image: ``(B, 3, H, W)`` in [0, 1]; probs: ``(B, K, h, w)``; person: ``(B, 1, h, w)``
            probability or ``None``.

    Returns:
        ``(portrait (B, 3, H, W), alpha (B, 1, H, W))``.
    """
    import torch

    kept, dropped = (torch.from_numpy(m).to(probs.device)
                     for m in class_masks(renderer.keep, probs.shape[1]))
    alpha = parse_alpha(probs, person, kept, dropped, subject)
    return renderer(image, alpha=alpha.to(image.dtype))


__all__ = ["class_masks", "combine_alpha", "parse_alpha", "render_parse"]
