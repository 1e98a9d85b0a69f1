"""The inference render at photo sizes: the reference render's smooth steps at reduced resolution,
then one fused full-resolution pass.

:func:`portraitseg.render.render_portrait` (the reference, differentiable) does every step at the
photo's resolution: foreground estimation (two blur-fusion passes), the falloff weights, the blur
levels, highlights in linear light and the guided filter each read and write several full-size
tensors, 3.6-12 s for a 12 MP photo on 2 CPU cores. All of those steps but the last composite
are smooth (blurs of sigma >= the falloff's first level, the guided filter's solved at
``1 / subsample`` already), so :func:`render_portrait_fast` computes them on the photo
box-averaged by a factor ``f`` (:func:`work_factor`) and touches the full-resolution photo only
twice: once to average it down, once in a fused pass over bands of rows that upsamples the
low-resolution fields (guided-filter coefficients, blur-fusion means, blurred background levels
and the sharp level's weight) and writes

    alpha = clamp(A . I + b)                       (the guided filter at full resolution)
    F     = clamp(Fb + alpha (I - alpha Fb - (1 - alpha) Bb))   (halo_free; naive: F = I)
    out   = lerp(w0 I + L, F, alpha)                (L: the blurred levels, w0: the sharp one's weight)

with no full-size temporary beyond the outputs. The error against the reference is recorded in
``experiments/bench_pipeline/results.md``. Not differentiable by design: use the reference to train.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from portraitseg.render.alpha import check_range, feather_alpha
from portraitseg.render.composite import (
    FOREGROUND_SIGMAS,
    HALO_EPS,
    _background,
    _inputs,
    _subject_free,
    _working,
    blur_fusion,
    falloff_weights,
)
from portraitseg.render.guided import guided_coefficients
from portraitseg.sizing import area_resize, as_float

#: The smallest blur sigma, in low-resolution pixels, the reduced grid must still resolve (at 1.25,
#: a 1280x720 frame's ``disc`` render is reduced 2x: 0.17 s instead of 0.89 s for the reference
#: on 2 cores, 53.6 dB PSNR against it; 1.5 kept it at full resolution).
MIN_LOW_SIGMA = 1.25
#: Largest reduction factor.
MAX_FACTOR = 8
#: Rows of the full-resolution photo per band of the fused pass.
BAND = 32


def work_factor(
    height: int, width: int, *, sigma: float, falloff: float, levels: int, radius: int, feather: float,
    mode: str, min_sigma: float = MIN_LOW_SIGMA, max_factor: int = MAX_FACTOR,
) -> int:
    """The reduction factor ``f >= 1`` of the smooth steps: every blur they run keeps at least
    ``min_sigma`` low-resolution pixels (the falloff's first level ``sigma / (levels - 1)``, the
    second foreground pass, the feather) and the guided filter's solve is no coarser than the
    reference's (``radius / 4``, rounded: at 720p the reference solves at full resolution, the
    fast render at half, 53.6 dB PSNR against it)."""
    short = min(height, width)
    scales = [sigma / (levels - 1) if falloff > 0 else sigma]
    if mode == "halo_free":
        scales.append(FOREGROUND_SIGMAS[1] * short)
    if feather > 0:
        scales.append(feather)
    factor = int(min(scales) / min_sigma)
    if radius > 0:
        factor = min(factor, max(1, round(radius / 4)))
    return max(1, min(factor, max_factor))


def _row_taps(n_out: int, n_in: int, start: int, stop: int, device: torch.device):
    """Bilinear (``align_corners=False``) source rows and weights of output rows ``start:stop``."""
    y = (torch.arange(start, stop, device=device, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5
    y = y.clamp(0.0, n_in - 1)
    i0 = y.floor().long()
    i1 = (i0 + 1).clamp(max=n_in - 1)
    return i0, i1, (y - i0).view(1, 1, -1, 1)


def _upsample_band(fields: torch.Tensor, size: tuple[int, int], start: int, stop: int) -> torch.Tensor:
    """Rows ``start:stop`` of ``fields`` ``(B, C, h, w)`` bilinearly upsampled to ``size``: rows by
    two-tap interpolation, then the columns by ``F.interpolate`` in 1-D (linear over each row: the
    2-D kernel with the rows unchanged gives the same values at about twice the cost)."""
    i0, i1, t = _row_taps(size[0], fields.shape[-2], start, stop, fields.device)
    rows = torch.lerp(fields.index_select(2, i0), fields.index_select(2, i1), t)
    b, c, r, w = rows.shape  # the columns as 1-D linear resampling: the same values, ~1.8x faster
    return F.interpolate(rows.view(b, c * r, w), size=size[1], mode="linear", align_corners=False).view(
        b, c, r, size[1])


def render_portrait_fast(
    image: torch.Tensor,
    alpha: torch.Tensor,
    *,
    blur: str,
    mode: str,
    strength: float,
    sigma: float | None,
    falloff: float,
    falloff_levels: int,
    feather: float,
    refine: float,
    refine_eps: float,
    highlights: float,
    highlight_threshold: float,
    method: str,
    factor: int | None = None,
    out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`portraitseg.render.render_portrait` with ``alpha=`` (same options, same outputs) at a
    fraction of its cost on large photos; see the module docstring.

    Args:
        image: ``(B, 3, H, W)`` float32 in [0, 1], or uint8 (0-255): read in bands of rows, never
            converted to float in full.
        alpha: subject alpha ``(B, 1, h, w)`` in [0, 1], any size (e.g. the parse grid's).
        factor: reduction factor of the smooth steps (default :func:`work_factor`); 1, or a blur
            of 0, runs the reference render itself.
        out: where to write the portrait ``(B, 3, H, W)``: float32 (e.g. ``image`` itself when the
            caller no longer needs it: each band of rows is read before it is written), or uint8
            (rounded and saturated, as :func:`portraitseg.viz.to_uint8`; any strides, e.g. a
            channels-last photo array's). Default: a new float32 tensor.

    Returns:
        ``(portrait (B, 3, H, W), alpha (B, 1, H, W) float32)``.
    """
    from portraitseg.render.portrait import render_portrait

    options = {"blur": blur, "mode": mode, "strength": strength, "sigma": sigma, "falloff": falloff,
               "falloff_levels": falloff_levels, "feather": feather, "refine": refine,
               "refine_eps": refine_eps, "highlights": highlights, "highlight_threshold": highlight_threshold,
               "method": method}
    big_h, big_w = image.shape[-2:]
    short = min(big_h, big_w)
    sigma_px = float(sigma) if sigma is not None else strength * short
    radius = int(round(refine * short))
    if factor is None:
        factor = work_factor(big_h, big_w, sigma=sigma_px, falloff=falloff, levels=int(falloff_levels),
                             radius=radius, feather=feather * short, mode=mode)
    grad = torch.is_grad_enabled() and (image.requires_grad or alpha.requires_grad)
    portrait = image.new_empty(image.shape, dtype=torch.float32) if out is None else out
    if factor <= 1 or sigma_px == 0 or grad:
        result, alpha_out = render_portrait(as_float(image), alpha=alpha, **options)
        return (result, alpha_out) if out is None else (store_rows(portrait, slice(None), result), alpha_out)

    low = (max(1, round(big_h / factor)), max(1, round(big_w / factor)))
    small = area_resize(image, low)
    check_range(small, "image", hint="; scale uint8 photos with image.float() / 255 and clamp")
    a_small = F.interpolate(alpha.to(small.dtype), size=low, mode="bilinear", align_corners=False,
                            antialias=alpha.shape[-2] > low[0]).clamp_(0.0, 1.0)
    stack, guided = _low_fields(small, a_small, factor=factor, short=short, sigma_low=sigma_px / factor,
                                radius=radius, **options)
    alpha_out = image.new_empty(image.shape[0], 1, big_h, big_w, dtype=torch.float32)
    for start in range(0, big_h, BAND):
        rows = slice(start, min(big_h, start + BAND))
        up = _upsample_band(stack, (big_h, big_w), rows.start, rows.stop)
        photo = as_float(image[:, :, rows])
        if guided:
            a = (up[:, 0:3] * photo).sum(1, keepdim=True).add_(up[:, 3:4]).clamp_(0.0, 1.0)
            at = 4
        else:
            a, at = up[:, 0:1], 1
        if mode == "halo_free":
            fb, bb = up[:, at : at + 3], up[:, at + 3 : at + 6]
            at += 6
            # F = clamp(Fb + a (I - a Fb - (1 - a) Bb))
            fg = (fb * a).neg_().add_(photo).addcmul_(bb, 1.0 - a, value=-1.0)
            fg = fg.mul_(a).add_(fb).clamp_(0.0, 1.0)
        else:
            fg = photo
        background = up[:, at : at + 3]
        if falloff > 0:
            background = background.addcmul(up[:, at + 3 : at + 4], photo)
        store_rows(portrait, rows, torch.lerp(background, fg, a))
        alpha_out[:, :, rows] = a
    return portrait, alpha_out


def _low_fields(
    small: torch.Tensor, a_small: torch.Tensor, *, factor: int, short: int, sigma_low: float, radius: int,
    blur: str, mode: str, falloff: float, falloff_levels: int, feather: float, refine_eps: float,
    highlights: float, highlight_threshold: float, method: str, **_: object,
) -> tuple[torch.Tensor, bool]:
    """The smooth steps on the reduced photo ``small`` and alpha ``a_small``: the fields the fused
    pass upsamples, stacked ``(B, C, h, w)`` (guided-filter coefficients ``A, b`` or the alpha;
    with ``halo_free`` the blur-fusion means ``Fb, Bb``; the blurred background ``L`` and, with a
    falloff, the sharp level's weight), and whether they start with guided-filter coefficients."""
    coeffs = None
    r_low = max(1, round(radius / factor)) if radius > 0 else 0
    if r_low > 0:
        coeffs = guided_coefficients(small, a_small, r_low, refine_eps)
        a_small = ((coeffs[0] * small).sum(1, keepdim=True) + coeffs[1]).clamp_(0.0, 1.0)
    if feather > 0:
        a_small = feather_alpha(a_small, feather * short / factor, method)
        coeffs = None  # the feathered alpha is smooth: upsampled as is
    fields = [coeffs[0], coeffs[1]] if coeffs is not None else [a_small]
    if mode == "halo_free":
        s_short = min(small.shape[-2:])
        sigmas = (max(FOREGROUND_SIGMAS[0] * s_short, 1.0), max(FOREGROUND_SIGMAS[1] * s_short, 1.0))
        fg_small, fb, bb = blur_fusion(small, a_small, sigmas, method)
        fields += [fb, bb]
        inputs = _subject_free(small, a_small, fg_small, highlights, highlight_threshold)
    else:
        inputs = _inputs(_working(small, highlights, highlight_threshold), None, None)
    linear, levels = highlights > 0, int(falloff_levels)
    if falloff > 0:
        weights = falloff_weights(a_small, falloff * short / factor, levels, method)
        rest = sum(weights[:, k : k + 1]
                   * _background(inputs, sigma_low * k / (levels - 1), blur, method, HALO_EPS, linear)
                   for k in range(1, levels))
        fields += [rest, weights[:, :1]]
    else:
        fields += [_background(inputs, sigma_low, blur, method, HALO_EPS, linear)]
    return torch.cat(fields, 1), coeffs is not None


def store_rows(out: torch.Tensor, rows: slice, value: torch.Tensor) -> torch.Tensor:
    """``out[:, :, rows] = value`` (in [0, 1]); a uint8 ``out`` gets ``value * 255`` rounded and
    saturated. Returns ``out``."""
    if out.dtype == torch.uint8:
        value = value.mul(255.0).round_().clamp_(0.0, 255.0)
    out[:, :, rows] = value
    return out


__all__ = ["render_portrait_fast", "store_rows", "work_factor"]
