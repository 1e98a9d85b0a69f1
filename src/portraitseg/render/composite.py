"""Compositing a sharp subject over a blurred background: the paper's naive render and a halo-free one.

The paper (Shen et al. 2016) renders ``out = a * I + (1 - a) * blur(I)``: the blur of the *whole*
image spreads the sharp subject's colours into the background around it, a halo.
:func:`halo_free_background` removes the subject before blurring and renormalises (normalised
convolution, Knutsson & Westin 1993)::

    B = (blur(I * (1 - a)) + eps * blur(I)) / (blur(1 - a) + eps)

so the background next to the subject is an average of background pixels only. Where almost no
background is near (``blur(1 - a)`` much below ``eps``, deep inside the subject) it falls back to
the plain ``blur(I)``, the paper's background, which is hidden by the subject there anyway.

Where the alpha is soft (hair) the photo mixes subject and background colours, so neither
``I`` (the paper's foreground) nor ``I * (1 - a)`` is clean. :func:`estimate_foreground` recovers
the subject's own colours ``F`` (blur fusion, Forte & Pitie 2021); the halo-free render then
composites ``F`` and blurs the photo minus the subject, ``I - a * F`` (= ``(1 - a) * background``),
instead of ``I * (1 - a)``. On the synthetic layers this adds ~2-3 dB in the boundary band
(``experiments/render_quality``).

Graded falloff (:func:`graded_background`) blends a small stack of blur levels, from sharp at the
subject's outline to the full blur at ``falloff`` pixels from it, approximating a depth-of-field
that grows with distance behind the subject.

All functions: ``image (B, C, H, W)``, ``alpha (B, 1, H, W)`` in [0, 1] -> ``(B, C, H, W)``,
differentiable in image and alpha, no device synchronisation.
"""

from __future__ import annotations

from typing import Literal

import torch

from portraitseg.render.blur import (
    Method,
    blur_map,
    blur_plan,
    boost_highlights,
    lens_size,
    linear_to_srgb,
    srgb_to_linear,
)

Kernel = Literal["gaussian", "disc"]
Mode = Literal["naive", "halo_free"]
MODES: tuple[str, ...] = ("naive", "halo_free")

#: Weight of the ``blur(I)`` fallback in the normalised convolution: where at least 5% of the
#: neighbourhood is background it contributes < 2% of the result.
HALO_EPS = 1e-3
#: Sigmas of the two blur-fusion passes of :func:`estimate_foreground`, fractions of the short side.
FOREGROUND_SIGMAS = (0.03, 0.006)


def _check_pair(image: torch.Tensor, alpha: torch.Tensor) -> None:
    if image.ndim != 4 or alpha.ndim != 4 or alpha.shape[1] != 1:
        raise ValueError(
            "expected image (B, C, H, W) and alpha (B, 1, H, W), "
            f"got {tuple(image.shape)} and {tuple(alpha.shape)}"
        )
    if alpha.shape[0] != image.shape[0] or alpha.shape[-2:] != image.shape[-2:]:
        raise ValueError(f"alpha {tuple(alpha.shape)} must match image {tuple(image.shape)} in B, H, W")


def alpha_composite(foreground: torch.Tensor, background: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``alpha * foreground + (1 - alpha) * background``; ``(B, C, H, W)``, alpha ``(B, 1, H, W)``."""
    return torch.lerp(background, foreground, alpha)


def _working(image: torch.Tensor, highlights: float, threshold: float) -> torch.Tensor:
    """The image the lens blurs: as given, or linear light with boosted highlights."""
    if highlights == 0:
        return image
    return boost_highlights(srgb_to_linear(image), highlights, threshold)


def estimate_foreground(
    image: torch.Tensor,
    alpha: torch.Tensor,
    sigmas: tuple[float, float] | None = None,
    method: Method = "auto",
) -> torch.Tensor:
    """Subject colours where the alpha is soft: blur-fusion foreground estimation.

    Two passes of Forte & Pitie's "Approximate Fast Foreground Colour Estimation" (ICIP 2021),
    with Gaussians (sigmas in pixels) instead of box filters::

        Fb = G(F a) / G(a),  Bb = G(B (1 - a)) / G(1 - a)
        F  = clamp(Fb + a (I - a Fb - (1 - a) Bb), 0, 1)

    starting from ``F = B = I``; the second pass uses the first's ``F`` and ``Bb``. Where
    ``alpha = 1`` the result is the image; where ``alpha = 0`` it is an extrapolation that any
    composite multiplies by 0.

    Args:
        image: ``(B, C, H, W)`` in [0, 1].
        alpha: ``(B, 1, H, W)`` in [0, 1].
        sigmas: the two passes' sigmas in pixels; default ``(0.03, 0.006)`` x the short side
            (at least 1 px).
        method: blur method.

    Returns:
        foreground ``(B, C, H, W)`` in [0, 1].
    """
    _check_pair(image, alpha)
    if sigmas is None:
        short = min(image.shape[-2:])
        sigmas = (max(FOREGROUND_SIGMAS[0] * short, 1.0), max(FOREGROUND_SIGMAS[1] * short, 1.0))
    return blur_fusion(image, alpha, sigmas, method)[0]


def blur_fusion(
    image: torch.Tensor, alpha: torch.Tensor, sigmas: tuple[float, ...], method: Method = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The passes of :func:`estimate_foreground` (no input checks): ``(F, Fb, Bb)``, the
    foreground and the last pass's blurred means, each ``(B, C, H, W)`` (the fast render blends
    with ``Fb`` and ``Bb`` too)."""
    c = image.shape[1]
    weight = 1.0 - alpha
    fg = fb = bb = image
    inputs = [image * alpha, alpha, image * weight]
    for n, sigma in enumerate(sigmas):
        plan = blur_plan("gaussian", sigma, image.shape[-2], image.shape[-1], method)

        def means(ys: list[torch.Tensor]) -> torch.Tensor:
            fa, a, b1a = ys
            return torch.cat([fa / (a + 1e-5), b1a / (1.0 - a + 1e-5)], 1)

        blurred = blur_map(inputs, plan, means)
        inputs.clear()  # free the full-size inputs before the next ones are made
        fb, bb = blurred[:, :c], blurred[:, c:]
        if _no_grad(image, alpha):  # the same formula with one full-size temporary
            fg = (fb * alpha).neg_().add_(image).addcmul_(bb, weight, value=-1.0)
            fg = fg.mul_(alpha).add_(fb).clamp_(0.0, 1.0)
        else:
            fg = (fb + alpha * (image - alpha * fb - weight * bb)).clamp(0.0, 1.0)
        if n + 1 < len(sigmas):
            inputs = [fg * alpha, alpha, bb * weight]
            del blurred, fb, bb
    return fg, fb, bb


def _no_grad(*tensors: torch.Tensor) -> bool:
    """True when no gradient can flow through ``tensors`` (temporaries may then be updated in place)."""
    return not torch.is_grad_enabled() or not any(t.requires_grad for t in tensors)


def _inputs(
    work: torch.Tensor, alpha: torch.Tensor | None, work_fg: torch.Tensor | None
) -> list[torch.Tensor]:
    """What the blur sees: the image (naive), or the subject-free image (``I (1 - a)``, or
    ``I - a F`` given the subject's colours), its weight and the image."""
    if alpha is None:
        return [work]
    weight = 1.0 - alpha
    if work_fg is None:
        free = work * weight
    elif _no_grad(work, alpha, work_fg):
        free = (alpha * work_fg).neg_().add_(work).clamp_min_(0.0)
    else:
        free = (work - alpha * work_fg).clamp_min(0.0)
    return [free, weight, work]


def _background(
    inputs: list[torch.Tensor], sigma: float, kernel: str, method: str, eps: float, linear: bool
) -> torch.Tensor:
    """Blur :func:`_inputs` (normalising the halo-free ones); back to sRGB at low resolution if linear."""
    h, w = inputs[0].shape[-2:]
    plan = blur_plan(kernel, lens_size(kernel, sigma), h, w, method)

    def finish(ys: list[torch.Tensor]) -> torch.Tensor:
        if len(ys) == 1:
            y = ys[0]
        else:
            num, den, full = ys
            y = (num + eps * full) / (den + eps)
        return linear_to_srgb(y.clamp(0.0, 1.0)) if linear else y

    return blur_map(inputs, plan, finish)


def naive_background(
    image: torch.Tensor,
    sigma: float,
    *,
    kernel: Kernel = "gaussian",
    method: Method = "auto",
    highlights: float = 0.0,
    highlight_threshold: float = 0.9,
) -> torch.Tensor:
    """The paper's background: the whole image blurred (subject included). ``sigma = 0``: the image.

    With ``highlights > 0`` the blur runs in linear light on :func:`boost_highlights`'s image and
    the result is converted back to sRGB (clipped to [0, 1]) before upsampling.
    """
    if sigma == 0:
        return image
    work = _working(image, highlights, highlight_threshold)
    return _background(_inputs(work, None, None), sigma, kernel, method, 0.0, highlights > 0)


def halo_free_background(
    image: torch.Tensor,
    alpha: torch.Tensor,
    sigma: float,
    *,
    kernel: Kernel = "gaussian",
    method: Method = "auto",
    eps: float = HALO_EPS,
    highlights: float = 0.0,
    highlight_threshold: float = 0.9,
    foreground: torch.Tensor | None = None,
) -> torch.Tensor:
    """Background blurred with the subject removed and renormalised (see the module docstring).

    Args:
        image: ``(B, C, H, W)``.
        alpha: subject alpha ``(B, 1, H, W)`` in [0, 1].
        sigma: blur strength in pixels (disc radius ``2 sigma``); 0 returns the image.
        kernel: ``"gaussian"`` or ``"disc"``.
        method: blur method (:func:`portraitseg.render.blur.gaussian_blur`). On the downsample path
            the division happens at low resolution, before the single upsampling.
        eps: weight of the ``blur(I)`` fallback.
        highlights, highlight_threshold: bokeh highlights in linear light, as :func:`naive_background`.
        foreground: the subject's colours ``(B, C, H, W)`` (:func:`estimate_foreground`); the
            subject is then removed as ``I - a F`` rather than ``I (1 - a)``.

    Returns:
        background ``(B, C, H, W)``.
    """
    _check_pair(image, alpha)
    if sigma == 0:
        return image
    inputs = _subject_free(image, alpha, foreground, highlights, highlight_threshold)
    return _background(inputs, sigma, kernel, method, eps, highlights > 0)


def _subject_free(
    image: torch.Tensor,
    alpha: torch.Tensor,
    foreground: torch.Tensor | None,
    highlights: float,
    threshold: float,
) -> list[torch.Tensor]:
    work = _working(image, highlights, threshold)
    work_fg = None if foreground is None else _working(foreground, highlights, threshold)
    return _inputs(work, alpha, work_fg)


def composite_naive(
    image: torch.Tensor,
    alpha: torch.Tensor,
    sigma: float,
    *,
    kernel: Kernel = "gaussian",
    method: Method = "auto",
) -> torch.Tensor:
    """The paper's render, ``alpha * I + (1 - alpha) * blur(I)``, ``(B, C, H, W)``.

    With ``kernel="gaussian"`` and ``method="exact"`` ``blur`` is ``cv2.GaussianBlur`` (reflect-101).
    """
    _check_pair(image, alpha)
    return alpha_composite(image, naive_background(image, sigma, kernel=kernel, method=method), alpha)


def composite_halo_free(
    image: torch.Tensor,
    alpha: torch.Tensor,
    sigma: float,
    *,
    kernel: Kernel = "gaussian",
    method: Method = "auto",
    eps: float = HALO_EPS,
    estimate: bool = True,
) -> torch.Tensor:
    """Sharp subject over :func:`halo_free_background`, ``(B, C, H, W)``.

    With ``estimate`` (default) the subject's colours come from :func:`estimate_foreground` and
    are removed from the background as ``I - a F``; otherwise the photo itself is the foreground.
    ``sigma = 0`` (no blur) returns the image unchanged: the background is the photo, so is the
    foreground.
    """
    foreground = estimate_foreground(image, alpha, method=method) if estimate and sigma > 0 else None
    background = halo_free_background(
        image, alpha, sigma, kernel=kernel, method=method, eps=eps, foreground=foreground
    )
    return alpha_composite(image if foreground is None else foreground, background, alpha)


def falloff_weights(
    alpha: torch.Tensor, distance: float, levels: int, method: Method = "auto"
) -> torch.Tensor:
    """Per-pixel weights ``(B, levels, H, W)`` of the blur levels ``0 .. levels-1`` (sharp -> full).

    A depth-like coordinate ``t = clamp(1 - 2 G(alpha), 0, 1)``, ``G`` a Gaussian of
    ``distance / 2`` pixels: 0 on and inside the subject's outline, ``erf(d / distance * sqrt(2))``
    at ``d`` pixels from a straight outline (0.95 at ``d = distance``), 1 far away. Level weights are
    linear interpolation ("hat") weights of ``t * (levels - 1)``; they sum to 1.

    Args:
        alpha: subject alpha ``(B, 1, H, W)``.
        distance: falloff distance in pixels (> 0).
        levels: number of blur levels (>= 2).
        method: method of the Gaussian ``G``.
    """
    if levels < 2:
        raise ValueError(f"falloff needs >= 2 levels, got {levels}")
    if not distance > 0:
        raise ValueError(f"falloff distance must be > 0, got {distance}")
    plan = blur_plan("gaussian", distance / 2, alpha.shape[-2], alpha.shape[-1], method)
    ks = torch.arange(levels, dtype=alpha.dtype, device=alpha.device).view(1, -1, 1, 1)

    def hats(ys: list[torch.Tensor]) -> torch.Tensor:
        u = (1.0 - 2.0 * ys[0]).clamp(0.0, 1.0) * (levels - 1)
        return (1.0 - (u - ks).abs()).clamp_min(0.0)

    # on the downsample path the (smooth) weights are computed at low resolution and upsampled,
    # which keeps them summing to 1
    return blur_map([alpha], plan, hats)


def graded_background(
    image: torch.Tensor,
    alpha: torch.Tensor,
    sigma: float,
    falloff: float,
    *,
    levels: int = 4,
    kernel: Kernel = "gaussian",
    mode: Mode = "halo_free",
    method: Method = "auto",
    eps: float = HALO_EPS,
    highlights: float = 0.0,
    highlight_threshold: float = 0.9,
    foreground: torch.Tensor | None = None,
) -> torch.Tensor:
    """Background whose blur grows from 0 at the subject to ``sigma`` at ``falloff`` pixels away.

    Blends ``levels`` backgrounds blurred with ``sigma * k / (levels - 1)``, ``k = 0 .. levels-1``
    (level 0 is the image itself), by :func:`falloff_weights`. ``falloff = 0`` is the uniform
    background of ``mode`` (``"naive"`` or ``"halo_free"``); ``highlights`` as in
    :func:`naive_background` (the levels are blended in sRGB); ``foreground`` as in
    :func:`halo_free_background`.

    Returns:
        background ``(B, C, H, W)``.
    """
    _check_pair(image, alpha)
    if mode not in MODES:
        raise ValueError(f"unknown compositing mode {mode!r}; choose one of {', '.join(MODES)}")
    if sigma == 0:
        return image
    if mode == "naive":
        inputs = _inputs(_working(image, highlights, highlight_threshold), None, None)
    else:
        inputs = _subject_free(image, alpha, foreground, highlights, highlight_threshold)

    def level(s: float) -> torch.Tensor:
        return _background(inputs, s, kernel, method, eps, highlights > 0)

    if falloff == 0:
        return level(sigma)
    weights = falloff_weights(alpha, falloff, levels, method)
    background = weights[:, :1] * image
    for k in range(1, levels):
        # fused multiply-add into the running sum (autograd-safe: addcmul needs only its factors)
        background = background.addcmul_(weights[:, k : k + 1], level(sigma * k / (levels - 1)))
    return background
