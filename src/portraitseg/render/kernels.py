"""Blur kernels: OpenCV's Gaussian taps and the lens-aperture disc, cached per device."""

from __future__ import annotations

import math
from functools import lru_cache

import torch


def gaussian_ksize(sigma: float) -> int:
    """OpenCV's kernel size for ``cv2.GaussianBlur(float_image, (0, 0), sigma)``: ``round(8s + 1) | 1``."""
    return int(round(sigma * 8 + 1)) | 1


@lru_cache(maxsize=64)
def _gaussian_taps(sigma: float, ksize: int) -> tuple[float, ...]:
    r = (ksize - 1) / 2
    taps = [math.exp(-((i - r) ** 2) / (2 * sigma * sigma)) for i in range(ksize)]
    total = sum(taps)
    return tuple(t / total for t in taps)


def gaussian_kernel1d(
    sigma: float,
    ksize: int | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Normalised 1-D Gaussian taps ``(ksize,)`` exactly as ``cv2.getGaussianKernel`` (sigma > 0).

    Computed in float64 and rounded once to ``dtype``. ``ksize`` defaults to :func:`gaussian_ksize`.
    Cached per (sigma, ksize, dtype, device), so a repeated render copies no kernel to the device;
    do not modify the result in place.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    ksize = gaussian_ksize(sigma) if ksize is None else int(ksize)
    if ksize < 1 or ksize % 2 == 0:
        raise ValueError(f"ksize must be a positive odd integer, got {ksize}")
    return _on_device(_gaussian_taps(float(sigma), ksize), dtype, torch.device(device or "cpu"))


@lru_cache(maxsize=128)
def _on_device(values: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    # A normal tensor even when the first caller runs under torch.inference_mode (the pipeline):
    # a cached inference tensor would break every later differentiable render ("Inference tensors
    # cannot be saved for backward").
    with torch.inference_mode(False):
        return torch.tensor(values, dtype=torch.float64).to(device=device, dtype=dtype)


@lru_cache(maxsize=32)
def _disc_taps(radius: float) -> tuple[tuple[float, ...], ...]:
    half = math.floor(radius + 0.5)
    rows = []
    for y in range(-half, half + 1):
        # Coverage of each pixel by the disc, anti-aliased over a one-pixel ramp at the rim.
        rows.append(
            tuple(min(max(radius + 0.5 - math.hypot(x, y), 0.0), 1.0) for x in range(-half, half + 1))
        )
    total = sum(map(sum, rows))
    return tuple(tuple(v / total for v in row) for row in rows)


def disc_kernel2d(
    radius: float, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> torch.Tensor:
    """Anti-aliased lens-aperture disc ``(k, k)``, ``k = 2 floor(radius + 0.5) + 1``, summing to 1.

    A pixel's weight is its coverage by the disc with a one-pixel linear ramp at the rim
    (``clamp(radius + 0.5 - distance, 0, 1)``). ``radius = 0`` is the identity. The per-axis
    standard deviation of a disc of radius ``r`` is ``r / 2``.
    """
    if not radius >= 0:
        raise ValueError(f"disc radius must be >= 0, got {radius}")
    return _on_device(_disc_taps(float(radius)), dtype, torch.device(device or "cpu"))
