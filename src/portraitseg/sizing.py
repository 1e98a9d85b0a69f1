"""Sizing: the one rule for the size of a photo scaled to a given long side, and the one resize
of image tensors.

:func:`long_side` serves the model input (letterbox, pass 1), the parse grid, the person
extension's working grid, the onnxruntime runner and the stages figure's panels;
:func:`resize_tensor` every downscale of a photo tensor. Importing this module imports neither
PyTorch nor numpy (the onnxruntime runner uses it); :func:`resize_tensor` imports PyTorch on use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def long_side(height: int, width: int, size: int, *, upscale: bool = True) -> tuple[int, int]:
    """``(h, w)`` of an ``height x width`` image scaled so its long side is ``size`` (aspect
    kept, rounded, at least 1); with ``upscale=False`` an image already smaller keeps its size.

    Raises:
        ValueError: a size or side below 1.
    """
    if min(height, width, size) < 1:
        raise ValueError(f"sizes must be >= 1, got {height}x{width} -> long side {size}")
    scale = size / max(height, width)
    if not upscale:
        scale = min(1.0, scale)
    return max(1, round(height * scale)), max(1, round(width * scale))


def resize_tensor(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize ``(B, C, H, W)`` to ``size`` (bilinear; antialiased when shrinking).

    Large reductions first take every k-th pixel (k <= half the reduction), so a 12 MP photo
    is not read in full; the antialiased bilinear pass then averages over >= 2 input pixels.
    """
    import torch.nn.functional as F

    if tuple(x.shape[-2:]) == tuple(size):
        return x
    step = max(1, int(min(x.shape[-2] / size[0], x.shape[-1] / size[1]) // 2))
    if step > 1:
        x = x[..., ::step, ::step].contiguous()
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


__all__ = ["long_side", "resize_tensor"]
