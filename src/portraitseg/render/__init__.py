"""Portrait rendering: keep the subject sharp, blur the background like a wide-aperture lens.

Kornia style: pure functions on ``(B, C, H, W)`` tensors plus the thin :class:`PortraitRenderer`
module, differentiable with respect to the image and the segmentation probabilities.
"""

from portraitseg.render.alpha import feather_alpha, refine_alpha, subject_alpha
from portraitseg.render.blur import (
    boost_highlights,
    disc_blur,
    disc_kernel2d,
    gaussian_blur,
    gaussian_kernel1d,
    lens_blur,
    linear_to_srgb,
    srgb_to_linear,
)
from portraitseg.render.composite import (
    alpha_composite,
    composite_halo_free,
    composite_naive,
    estimate_foreground,
    falloff_weights,
    graded_background,
    halo_free_background,
    naive_background,
)
from portraitseg.render.loss import render_loss
from portraitseg.render.portrait import DEFAULTS, PortraitRenderer, render_portrait

__all__ = [
    "DEFAULTS",
    "PortraitRenderer",
    "alpha_composite",
    "boost_highlights",
    "composite_halo_free",
    "composite_naive",
    "disc_blur",
    "disc_kernel2d",
    "estimate_foreground",
    "falloff_weights",
    "feather_alpha",
    "gaussian_blur",
    "gaussian_kernel1d",
    "graded_background",
    "halo_free_background",
    "lens_blur",
    "linear_to_srgb",
    "naive_background",
    "refine_alpha",
    "render_loss",
    "render_portrait",
    "srgb_to_linear",
    "subject_alpha",
]
