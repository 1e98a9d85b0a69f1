"""Iterative region steps on a pixel grid, plain torch: 3x3 maxima, connected components
(:func:`label_regions`) and seeded growth.

Each step is a 3x3 (or cross) maximum over the grid, repeated; no data-dependent shapes. On the
CPU, where reading back is free, the loops stop once a pass changed nothing; on accelerators they
run their full count without a host sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: On the CPU, the iterative steps stop early once a pass of this many iterations changed nothing.
CHECK_EVERY = 8


def _settled(labels: torch.Tensor, previous: torch.Tensor | None) -> bool:
    """On the CPU (where reading back is free): ``labels`` equal ``previous``, the labels of the
    last check; on accelerators always False (the loops run their full count, no host sync)."""
    return labels.device.type == "cpu" and previous is not None and torch.equal(previous, labels)


def max3x3(x: torch.Tensor) -> torch.Tensor:
    """3x3 maximum filter of ``(B, C, H, W)`` (zero padding) as two separable passes of
    ``torch.maximum`` over shifted views (PyTorch's CPU ``max_pool2d`` with stride 1 is ~100x
    slower on a one-channel mask)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., :, :-2], p[..., :, 1:-1]), p[..., :, 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def max_cross(x: torch.Tensor) -> torch.Tensor:
    """Maximum over each pixel and its 4 neighbours of ``(B, C, H, W)`` (zero padding)."""
    p = F.pad(x, (1, 1, 1, 1))
    rows = torch.maximum(torch.maximum(p[..., 1:-1, :-2], p[..., 1:-1, 2:]), p[..., 1:-1, 1:-1])
    return torch.maximum(rows, torch.maximum(p[..., :-2, 1:-1], p[..., 2:, 1:-1]))


def grow(labels: torch.Tensor, allowed: torch.Tensor | None, iterations: int) -> torch.Tensor:
    """Seeded growth: each unlabelled pixel of ``allowed`` (None: all) takes the largest label
    among its neighbours, ``iterations`` times, the steps alternating 8 and 4 neighbours (an
    octagon, close to a disc): first arrival wins, so a pixel gets the label of the seed nearest
    along ``allowed``. ``labels`` ``(B, 1, h, w)`` float, 0 = none."""
    previous = None
    for step in range(iterations):
        if step % CHECK_EVERY == 0:
            if _settled(labels, previous):
                break
            previous = labels
        free = labels == 0 if allowed is None else (labels == 0) & allowed
        labels = torch.where(free, max3x3(labels) if step % 2 else max_cross(labels), labels)
    return labels


def label_regions(mask: torch.Tensor, iterations: int) -> torch.Tensor:
    """8-connected components of a binary mask ``(B, 1, H, W)`` (bool or 0/1 float): each pixel
    of a region gets ``1 +`` the largest flat index of the region's pixels, background 0, after
    ``iterations`` max-propagation steps (the longest path inside a region, in pixels, labels any
    region whole; kornia's ``connected_components`` algorithm with a faster 3x3 maximum). On the
    CPU the steps stop once they change nothing; on accelerators they run their full count.

    Returns:
        ``(B, 1, H, W)`` float32 labels (exact integers up to 2^24 pixels).
    """
    _, _, h, w = mask.shape
    ids = torch.arange(1, h * w + 1, device=mask.device, dtype=torch.float32).view(1, 1, h, w)
    keep = mask.float()
    labels = ids * keep
    previous = None
    for step in range(iterations):
        if step % CHECK_EVERY == 0:
            if _settled(labels, previous):
                break
            previous = labels
        labels = max3x3(labels).mul_(keep)
    return labels


__all__ = ["CHECK_EVERY", "grow", "label_regions", "max3x3", "max_cross"]
