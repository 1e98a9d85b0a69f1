"""Iterative region steps on a pixel grid, plain torch: 3x3 maxima, connected components
(:func:`label_regions`) and seeded growth.

Each step is a 3x3 (or cross) maximum over the grid, repeated; no data-dependent shapes. On the
CPU, where reading back is free, the loops stop once a pass changed nothing; on accelerators they
run their full count without a host sync.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

#: On the CPU, the iterative steps stop early once a pass of this many iterations changed nothing.
CHECK_EVERY = 8


def iterate(
    labels: torch.Tensor, step: Callable[[torch.Tensor, int], torch.Tensor], iterations: int
) -> torch.Tensor:
    """``labels = step(labels, i)`` for ``i`` in ``0 .. iterations - 1``; on the CPU (where reading back
    is free) it stops once :data:`CHECK_EVERY` steps changed nothing, on accelerators it runs the full
    count (no host sync)."""
    previous = None
    for i in range(iterations):
        if i % CHECK_EVERY == 0:
            if labels.device.type == "cpu" and previous is not None and torch.equal(previous, labels):
                break
            previous = labels
        labels = step(labels, i)
    return labels


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
    def step(x: torch.Tensor, i: int) -> torch.Tensor:
        free = x == 0 if allowed is None else (x == 0) & allowed
        return torch.where(free, max3x3(x) if i % 2 else max_cross(x), x)

    return iterate(labels, step, iterations)


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
    return iterate(ids * keep, lambda x, _: max3x3(x).mul_(keep), iterations)


__all__ = ["CHECK_EVERY", "grow", "iterate", "label_regions", "max3x3", "max_cross"]
