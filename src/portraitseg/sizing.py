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


#: Pixels from which :func:`area_resize` reduces a uint8 photo on the CPU with OpenCV's
#: ``INTER_AREA``: 12 MP to 1 MP in 53 ms against 197 ms banded through PyTorch (one thread);
#: below it the saving is smaller than importing OpenCV (about 0.12 s).
OPENCV_MIN_PIXELS = 4_000_000


def area_resize(x: torch.Tensor, size: tuple[int, int], band: int = 256,
                opencv_min_pixels: int = OPENCV_MIN_PIXELS) -> torch.Tensor:
    """``(B, C, H, W)`` area-averaged to ``size`` (``F.adaptive_avg_pool2d``, OpenCV's
    ``INTER_AREA`` when shrinking); float out.

    A uint8 photo is never converted in full. On the CPU, from ``opencv_min_pixels`` pixels and
    with 1, 3 or 4 channels, OpenCV's ``INTER_AREA`` reduces it (the exact area means, each
    output pixel weighting the input pixels by the part of them it covers, rounded to 8 bits;
    as many threads as PyTorch's intra-op count). Otherwise it is read ``band`` rows at a time:
    each band converted (:func:`as_float`) and averaged along its rows, then the averaged rows
    along the columns: the same means as the 2-D pooling (it is separable), whose windows are
    whole input pixels.
    """
    import torch
    import torch.nn.functional as F

    if x.is_floating_point():
        return F.adaptive_avg_pool2d(x, size)
    b, c, h, w = x.shape
    shrink = size[0] <= h and size[1] <= w
    if (x.dtype == torch.uint8 and x.device.type == "cpu" and shrink and c in (1, 3, 4)
            and h * w >= opencv_min_pixels):
        return _opencv_area(x, size)
    # one buffer for the bands and one for the averaged rows: nothing allocated per band, so the
    # heap does not fragment (per-band tensors left 70 MB of RSS behind for a 12 MP photo)
    buffer = torch.empty(b, c, min(band, h), w, device=x.device)
    cols = torch.empty(b, c, h, size[1], device=x.device)
    for i in range(0, h, band):
        rows = min(band, h - i)
        part = buffer[:, :, :rows].copy_(x[:, :, i : i + rows]).div_(255.0)
        cols[:, :, i : i + rows] = F.adaptive_avg_pool2d(part, (rows, size[1]))
    return F.adaptive_avg_pool2d(cols, size)


def _opencv_area(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """:func:`area_resize` of a uint8 CPU ``(B, C, H, W)`` by ``cv2.resize(INTER_AREA)`` on each
    photo's ``(H, W, C)`` view (a channels-last photo array is read in place, any other layout
    copied once); float ``(B, C, h, w)`` in [0, 1]."""
    import cv2
    import torch

    cv2.setNumThreads(torch.get_num_threads())
    out = []
    for photo in x:
        hwc = photo.permute(1, 2, 0)
        small = cv2.resize(hwc.contiguous().numpy(), (size[1], size[0]), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(small.reshape(size[0], size[1], -1)).permute(2, 0, 1))
    return torch.stack(out).float().div_(255.0)


__all__ = ["OPENCV_MIN_PIXELS", "area_resize", "as_float", "long_side", "resize_tensor"]
