"""The colour guided filter (He et al. 2010/2015), the one implementation of the render path: the
reference render's :func:`portraitseg.render.refine_alpha` and the fast render's fused pass both use
it. Pure PyTorch (no kornia on the inference path), differentiable."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def box_mean(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over ``(2 radius + 1)^2`` windows of ``(B, C, h, w)``, reflected at the border:
    kornia's ``box_blur(x, 2 radius + 1, "reflect")`` (a depthwise convolution, as there; on the
    CPU two 1-D convolutions, running sums and pooling with stride 1 all measured slower)."""
    k, channels = 2 * radius + 1, x.shape[1]
    pad = min(radius, x.shape[-2] - 1, x.shape[-1] - 1)
    if pad < radius:  # reflect padding needs a larger input: replicate what is missing
        x = F.pad(x, (pad, pad, pad, pad), mode="reflect") if pad > 0 else x
        x = F.pad(x, (radius - pad,) * 4, mode="replicate")
    else:
        x = F.pad(x, (radius, radius, radius, radius), mode="reflect")
    kernel = x.new_full((channels, 1, k, k), 1.0 / (k * k))
    return F.conv2d(x, kernel, groups=channels)


#: the channel pairs (i <= j) of the guide's 3x3 covariance, and where each of its 9 entries is
_UPPER = ((0, 0, 0, 1, 1, 2), (0, 1, 2, 1, 2, 2))
_SYMMETRIC = (0, 1, 2, 1, 3, 4, 2, 4, 5)


def guided_coefficients(
    guide: torch.Tensor, alpha: torch.Tensor, radius: int, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Colour guided filter coefficients: ``alpha ~ A . guide + b`` in ``(2 radius + 1)^2`` windows.

    Args:
        guide: ``(B, 3, h, w)``; alpha: ``(B, 1, h, w)``; eps: regulariser (squared guide units).

    Returns:
        ``(A (B, 3, h, w), b (B, 1, h, w))``, box-averaged over the window (so that
        ``A . guide + b`` is the filtered alpha).
    """
    b_, _, h, w = guide.shape
    # the window means of I, p, the 6 distinct products I_i I_j and I p, in one pass of the box filter
    products = guide[:, _UPPER[0]] * guide[:, _UPPER[1]]
    means = box_mean(torch.cat((guide, alpha, products, guide * alpha), 1), radius)
    mean_i, mean_p, mean_ii, mean_ip = means.split((3, 1, 6, 3), 1)
    var = mean_ii[:, _SYMMETRIC].view(b_, 3, 3, h, w) - mean_i[:, :, None] * mean_i[:, None]
    cov = mean_ip - mean_i * mean_p
    var = var.permute(0, 3, 4, 1, 2) + eps * torch.eye(3, device=guide.device, dtype=guide.dtype)
    a = torch.linalg.solve(var, cov.permute(0, 2, 3, 1)[..., None])[..., 0].permute(0, 3, 1, 2)
    b = mean_p - (a * mean_i).sum(1, keepdim=True)
    return box_mean(torch.cat((a, b), 1), radius).split((3, 1), 1)


def guided_filter(
    guide: torch.Tensor, alpha: torch.Tensor, radius: int, eps: float, subsample: int = 1
) -> torch.Tensor:
    """The fast guided filter: coefficients solved on the inputs box-averaged by ``subsample``
    (window radius ``radius / subsample`` there), upsampled bilinearly and applied to the
    full-resolution guide.

    Args:
        guide: ``(B, 3, H, W)``; alpha: ``(B, 1, H, W)``; radius >= 1 (full-resolution pixels).

    Returns:
        filtered alpha ``(B, 1, H, W)`` (not clamped).
    """
    h, w = guide.shape[-2:]
    subsample = max(1, min(int(subsample), h, w))
    low = (max(1, round(h / subsample)), max(1, round(w / subsample)))
    small_i = F.adaptive_avg_pool2d(guide, low) if subsample > 1 else guide
    small_p = F.adaptive_avg_pool2d(alpha, low) if subsample > 1 else alpha
    a, b = guided_coefficients(small_i, small_p, max(1, round(radius / subsample)), eps)
    if subsample > 1:
        a = F.interpolate(a, size=(h, w), mode="bilinear", align_corners=False)
        b = F.interpolate(b, size=(h, w), mode="bilinear", align_corners=False)
    return (a * guide).sum(1, keepdim=True) + b


__all__ = ["box_mean", "guided_coefficients", "guided_filter"]
