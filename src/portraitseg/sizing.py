"""Sizing: the one rule for the size of a photo scaled to a given long side, and the resizes of
image tensors.

:func:`long_side` serves the model input (letterbox, pass 1), the parse grid, the person
extension's working grid, the onnxruntime runner and the stages figure's panels;
:func:`resize_tensor` every bilinear downscale of a photo tensor, :func:`area_resize` every
area-averaged one (the face finder's pyramid, the fast render's reduced grid). Both take a uint8
photo as it is and return float in [0, 1], converting only rows they read: a 12 MP photo is never
converted in full (144 MB as float32). Importing this module imports neither PyTorch nor numpy
(the onnxruntime runner uses it); the resizes import PyTorch on use.
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
    A uint8 photo is converted to float in [0, 1] after that step (:func:`as_float`).
    """
    import torch.nn.functional as F

    step = max(1, int(min(x.shape[-2] / size[0], x.shape[-1] / size[1]) // 2))
    if step > 1:
        x = x[..., ::step, ::step]
    x = as_float(x).contiguous()
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    shrink = x.shape[-2] > size[0] or x.shape[-1] > size[1]
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=shrink)


def as_float(x: torch.Tensor) -> torch.Tensor:
    """A photo tensor as float: uint8 scaled to [0, 1] (a new tensor), anything else as it is."""
    import torch

    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def area_resize(x: torch.Tensor, size: tuple[int, int], band: int = 256) -> torch.Tensor:
    """``(B, C, H, W)`` area-averaged to ``size`` (``F.adaptive_avg_pool2d``, OpenCV's
    ``INTER_AREA`` when shrinking); float out. A uint8 photo is read ``band`` rows at a time: each
    band converted (:func:`as_float`) and averaged along its rows, then the averaged rows along the
    columns: the same means as the 2-D pooling (it is separable)."""
    import torch
    import torch.nn.functional as F

    if x.is_floating_point():
        return F.adaptive_avg_pool2d(x, size)
    b, c, h, w = x.shape
    # one buffer for the bands and one for the averaged rows: nothing allocated per band, so the
    # heap does not fragment (per-band tensors left 70 MB of RSS behind for a 12 MP photo)
    buffer = torch.empty(b, c, min(band, h), w, device=x.device)
    cols = torch.empty(b, c, h, size[1], device=x.device)
    for i in range(0, h, band):
        rows = min(band, h - i)
        part = buffer[:, :, :rows].copy_(x[:, :, i : i + rows]).div_(255.0)
        cols[:, :, i : i + rows] = F.adaptive_avg_pool2d(part, (rows, size[1]))
    return F.adaptive_avg_pool2d(cols, size)


__all__ = ["area_resize", "as_float", "long_side", "resize_tensor"]
