"""Lens blurs for the portrait renderer: an OpenCV-exact Gaussian, an aperture disc, and fast paths.

Every blur here is a linear, per-channel, shape-preserving filter of a ``(B, C, H, W)`` float tensor
with reflect-101 borders (OpenCV's ``BORDER_REFLECT_101``: ``dcb|abcd|cba``), differentiable with
respect to its input, batched, on any device, with no host-device synchronisation: every decision
(kernel size, path, factor) depends only on Python numbers and tensor shapes, never on values.

Three ways to apply a kernel, picked by ``method``:

``"direct"``
    Convolution in the image domain: for the separable Gaussian one block-banded matrix product
    per axis (~4x less CPU time than torch's depthwise ``conv2d`` for 33 taps), for the disc a 2-D
    ``conv2d``. Cost grows with the kernel size.
``"fft"``
    The same convolution through real FFTs of the reflect-padded image (one axis at a time for the
    Gaussian). Cost does not grow with the kernel size. Equal to ``"direct"`` up to float rounding.
``"downsample"``
    Average-pool by an even integer factor ``s`` (the mirrored borders are pooled exactly), blur
    the small image with the remaining blur, upsample bilinearly. ``s`` is the largest even
    integer that leaves at least :data:`LOWRES_SIGMA` (Gaussian) or :data:`LOWRES_RADIUS` (disc)
    low-resolution pixels of blur, and the low-resolution blur is reduced so that the total second
    moment equals the requested one. An approximation; its error is bounded below.

``"exact"`` picks ``"direct"`` or ``"fft"`` by kernel size (both match OpenCV to 1e-4, tested),
``"auto"`` picks ``"downsample"`` when its factor is at least 2 (Gaussian sigma >= 8, disc
radius >= 16) and ``"exact"`` otherwise.

Error of the Gaussian downsample path (max abs difference from the exact blur, images in [0, 1]):

* guaranteed for *any* image: <= 0.04 (the worst case is an adversarial pattern aligned with the
  pooling grid; computed from the operator's rows by autograd: 0.035 / 0.038 / 0.038 at sigma
  8 / 16 / 32, asserted in the tests);
* a unit-contrast step edge at any position and angle: <= 0.003 (tested, sigma 8 ... 32);
* photographs: <= 0.0031 measured (``experiments/render_speed``, 1 MP and 12 MP, sigma 8 / 16 /
  32; the tests assert <= 0.005 on a crop of skimage's astronaut);
* uniform white noise: <= 0.003.

Use ``method="exact"`` where even that matters. The disc's downsample path keeps a radius of at
least 8 low-res pixels; its rim is softened by about ``s`` pixels (max error <= 0.01 on photos,
tested).

The parts: the kernels in :mod:`portraitseg.render.kernels`, the plans and paths in
:mod:`portraitseg.render.blur_paths`, the linear-light conversions in
:mod:`portraitseg.render.linear`; their names are importable from here too.
"""

from __future__ import annotations

from typing import Literal

import torch

from portraitseg.render.blur_paths import (
    DIRECT_MAX_DISC,
    DIRECT_MAX_KSIZE,
    LOWRES_RADIUS,
    LOWRES_SIGMA,
    METHODS,
    BlurPlan,
    Method,
    blur_map,
    blur_plan,
    check_blur_input,
    conv_valid,
    downsample_factor,
    lowres_size,
    next_fast_len,
    pad_reflect,
    pool_padded,
    upsample_crop,
)
from portraitseg.render.kernels import disc_kernel2d, gaussian_kernel1d, gaussian_ksize
from portraitseg.render.linear import (
    boost_highlights,
    linear_to_srgb,
    srgb_to_linear,
    srgb_to_linear_scalar,
)

__all__ = [
    "DIRECT_MAX_DISC", "DIRECT_MAX_KSIZE", "LOWRES_RADIUS", "LOWRES_SIGMA", "METHODS", "BlurPlan",
    "Method", "blur_map", "blur_plan", "boost_highlights", "check_blur_input", "conv_valid",
    "disc_blur", "disc_kernel2d", "downsample_factor", "gaussian_blur", "gaussian_kernel1d",
    "gaussian_ksize", "lens_blur", "lens_size", "linear_to_srgb", "lowres_size", "next_fast_len",
    "pad_reflect", "pool_padded", "srgb_to_linear", "srgb_to_linear_scalar", "upsample_crop",
]


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype


def _blur(image: torch.Tensor, kind: str, size: float, method: str, ksize: int | None = None) -> torch.Tensor:
    check_blur_input(image)
    plan = blur_plan(kind, size, image.shape[-2], image.shape[-1], method, ksize)
    x = image.to(_compute_dtype(image))
    return blur_map([x], plan, ksize=ksize).to(image.dtype)


# --------------------------------------------------------------------------------------------------
# Public blurs
# --------------------------------------------------------------------------------------------------


def gaussian_blur(
    image: torch.Tensor, sigma: float, method: Method = "auto", *, ksize: int | None = None
) -> torch.Tensor:
    """Gaussian blur of ``image`` ``(B, C, H, W)`` -> ``(B, C, H, W)``, matching OpenCV.

    With ``method="exact"`` (or ``"direct"`` / ``"fft"``) the result equals
    ``cv2.GaussianBlur(img, (ksize, ksize), sigma, borderType=cv2.BORDER_REFLECT_101)`` within 1e-4
    (tested), where ``ksize`` defaults to OpenCV's own choice for float images,
    ``round(8 sigma + 1) | 1``. ``method="auto"`` uses the downsample path for ``sigma >= 8``
    (error bounds in the module docstring) and ignores ``ksize`` there.

    Args:
        image: ``(B, C, H, W)`` floating tensor, any size (borders fold repeatedly when the kernel
            is larger than the image, as OpenCV does).
        sigma: standard deviation in pixels, ``> 0``.
        method: ``"auto"``, ``"exact"``, ``"direct"``, ``"fft"`` or ``"downsample"``.
        ksize: odd kernel size for the exact paths.

    Returns:
        The blurred ``(B, C, H, W)`` tensor, same dtype and device.
    """
    if not sigma > 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    return _blur(image, "gaussian", float(sigma), method, ksize)


def disc_blur(image: torch.Tensor, radius: float, method: Method = "auto") -> torch.Tensor:
    """Lens-aperture (disc) blur of ``image`` ``(B, C, H, W)`` -> ``(B, C, H, W)``.

    Convolution with :func:`disc_kernel2d` and reflect-101 borders. ``method="auto"`` uses the
    downsample path when ``radius >= 2 * LOWRES_RADIUS`` (the disc keeps >= 8 px of radius at low
    resolution, so its rim stays round; the rim is softened by about ``factor`` pixels). A disc of
    radius ``2 sigma`` has the same second moment as a Gaussian of ``sigma``.

    Args:
        image: ``(B, C, H, W)`` floating tensor.
        radius: disc radius in pixels, ``>= 0`` (0 returns the input).
        method: ``"auto"``, ``"exact"``, ``"direct"``, ``"fft"`` or ``"downsample"``.
    """
    if not radius >= 0:
        raise ValueError(f"disc radius must be >= 0, got {radius}")
    return _blur(image, "disc", float(radius), method)


def lens_blur(
    image: torch.Tensor,
    sigma: float,
    kernel: Literal["gaussian", "disc"] = "gaussian",
    method: Method = "auto",
) -> torch.Tensor:
    """Blur of strength ``sigma`` with a Gaussian or a disc of the same second moment (radius ``2 sigma``).

    ``sigma = 0`` returns the input unchanged. Shapes as :func:`gaussian_blur`.
    """
    if kernel == "gaussian":
        return image if sigma == 0 else gaussian_blur(image, sigma, method)
    if kernel == "disc":
        return disc_blur(image, 2.0 * sigma, method)
    raise ValueError(f"unknown blur kernel {kernel!r}; choose 'gaussian' or 'disc'")


def lens_size(kernel: str, sigma: float) -> float:
    """The size :func:`blur_plan` takes for a blur of strength ``sigma``: sigma or the disc radius."""
    return 2.0 * sigma if kernel == "disc" else sigma
