"""Linear light: sRGB <-> linear conversions and the highlight boost that makes bokeh bloom."""

from __future__ import annotations

import torch


def _inference(x: torch.Tensor) -> bool:
    """True when no gradient will flow through ``x``, so full-size temporaries may be reused."""
    return not (torch.is_grad_enabled() and x.requires_grad)


def srgb_to_linear(image: torch.Tensor) -> torch.Tensor:
    """IEC 61966-2-1 sRGB -> linear, elementwise on ``(B, 3, H, W)`` in [0, 1]; finite gradients.

    Branch-free: ``f(max(c, t)) + min(c, t) / 12.92 - t / 12.92`` with ``t = 0.04045``, where the two
    pieces of the curve meet (to 2e-9: the standard's own gap); in place when no gradient is needed.
    """
    t = 0.04045
    if _inference(image):
        out = image.clamp_min(t).add_(0.055).div_(1.055).log_().mul_(2.4).exp_()
        return out.add_(image.clamp_max(t).sub_(t), alpha=1 / 12.92)
    return ((image.clamp_min(t) + 0.055) / 1.055) ** 2.4 + (image.clamp_max(t) - t) / 12.92


def linear_to_srgb(image: torch.Tensor) -> torch.Tensor:
    """Linear -> sRGB (inverse of :func:`srgb_to_linear`); finite gradients at 0 (no ``inf * 0``)."""
    t = 0.0031308
    if _inference(image):
        out = image.clamp_min(t).log_().mul_(1 / 2.4).exp_().mul_(1.055).sub_(0.055)
        return out.add_(image.clamp_max(t).sub_(t), alpha=12.92)
    return 1.055 * image.clamp_min(t) ** (1 / 2.4) - 0.055 + (image.clamp_max(t) - t) * 12.92


def srgb_to_linear_scalar(value: float) -> float:
    """:func:`srgb_to_linear` of one number."""
    return value / 12.92 if value <= 0.04045 else ((value + 0.055) / 1.055) ** 2.4


def boost_highlights(linear: torch.Tensor, gain: float, threshold: float = 0.9) -> torch.Tensor:
    """Brighten near-clipped pixels of a linear-light image ``(B, 3, H, W)`` so they bloom into bokeh.

    A photo clips highlights at 1, though the scene was brighter; blurring the clipped value gives
    dim grey discs. Pixels whose sRGB luminance exceeds ``threshold`` are multiplied by
    ``1 + gain * ramp**2``, ``ramp`` going 0 -> 1 from ``threshold`` to full white (smooth).
    """
    lum = 0.2126 * linear[:, 0:1] + 0.7152 * linear[:, 1:2] + 0.0722 * linear[:, 2:3]
    lo = srgb_to_linear_scalar(threshold)
    ramp = ((lum - lo) / max(1.0 - lo, 1e-6)).clamp(0.0, 1.0)
    return linear * (1.0 + gain * ramp * ramp)
