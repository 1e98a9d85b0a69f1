"""The portrait render: segmentation (or alpha) + photo -> shallow depth-of-field portrait.

:func:`render_portrait` does the work; :class:`PortraitRenderer` stores its options (built from
``conf/render/*.yaml`` with ``hydra.utils.instantiate``) and calls it.

Spatial options (``strength``, ``falloff``, ``feather``, ``refine``) are fractions of the image's
short side, so a preset looks the same on a 256 px training crop and a 12 MP photo; ``sigma``
(pixels) overrides ``strength`` where an absolute blur is wanted (the paper, benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from portraitseg.classes import SUBJECT_CLASSES, class_ids
from portraitseg.render.alpha import check_range, feather_alpha, refine_alpha, subject_alpha
from portraitseg.render.blur import (
    METHODS,
    Method,
    check_blur_input,
)
from portraitseg.render.composite import (
    HALO_EPS,
    MODES,
    Kernel,
    Mode,
    alpha_composite,
    estimate_foreground,
    graded_background,
)
from portraitseg.render.options import PERSON_DEFAULTS, SUBJECTS, check_person_options

KERNELS: tuple[str, ...] = ("gaussian", "disc")

#: Defaults of :func:`render_portrait` and :class:`PortraitRenderer` (= ``conf/render/disc.yaml``).
DEFAULTS: dict[str, Any] = {
    "blur": "disc",
    "mode": "halo_free",
    "strength": 0.012,
    "sigma": None,
    "falloff": 0.15,
    "falloff_levels": 4,
    "feather": 0.0,
    "refine": 0.01,
    "refine_eps": 1e-3,
    "highlights": 2.0,
    "highlight_threshold": 0.9,
    "method": "auto",
}


def check_options(
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
) -> None:
    """Raise ``ValueError`` naming the option and its allowed values for any bad render option."""
    if blur not in KERNELS:
        raise ValueError(f"render option blur={blur!r}: choose one of {', '.join(KERNELS)}")
    if mode not in MODES:
        raise ValueError(f"render option mode={mode!r}: choose one of {', '.join(MODES)}")
    if method not in METHODS:
        raise ValueError(f"render option method={method!r}: choose one of {', '.join(METHODS)}")
    for name, value in (
        ("strength", strength),
        ("falloff", falloff),
        ("feather", feather),
        ("refine", refine),
        ("highlights", highlights),
    ):
        if not value >= 0:
            raise ValueError(f"render option {name}={value!r} must be >= 0")
    if sigma is not None and not sigma >= 0:
        raise ValueError(f"render option sigma={sigma!r} must be >= 0 (pixels) or null to use strength")
    if int(falloff_levels) != falloff_levels or falloff_levels < 2:
        raise ValueError(f"render option falloff_levels={falloff_levels!r} must be an integer >= 2")
    if not refine_eps > 0:
        raise ValueError(f"render option refine_eps={refine_eps!r} must be > 0")
    if not 0 <= highlight_threshold < 1:
        raise ValueError(f"render option highlight_threshold={highlight_threshold!r} must be in [0, 1)")


def _alpha_from(
    image: torch.Tensor,
    logits: torch.Tensor | None,
    probs: torch.Tensor | None,
    alpha: torch.Tensor | None,
    keep: Sequence[int],
) -> torch.Tensor:
    given = [name for name, t in (("logits", logits), ("probs", probs), ("alpha", alpha)) if t is not None]
    if len(given) != 1:
        raise ValueError(f"pass exactly one of logits=, probs= or alpha= (got {', '.join(given) or 'none'})")
    source = {"logits": logits, "probs": probs, "alpha": alpha}[given[0]]
    assert source is not None
    check_blur_input(source, given[0])
    if source.shape[0] != image.shape[0]:
        raise ValueError(f"{given[0]} batch {source.shape[0]} does not match image batch {image.shape[0]}")
    if source.device != image.device:
        raise ValueError(f"{given[0]} is on {source.device} but image is on {image.device}")
    size = (image.shape[-2], image.shape[-1])
    if alpha is not None:
        if alpha.shape[1] != 1:
            raise ValueError(f"alpha must have shape (B, 1, h, w), got {tuple(alpha.shape)}")
        check_range(alpha, "alpha")
        a = alpha.to(image.dtype)
        if tuple(a.shape[-2:]) != size:
            a = torch.nn.functional.interpolate(a, size=size, mode="bilinear", align_corners=False)
        return a
    return subject_alpha(source, keep, from_logits=logits is not None, size=size).to(image.dtype)


def render_portrait(
    image: torch.Tensor,
    *,
    logits: torch.Tensor | None = None,
    probs: torch.Tensor | None = None,
    alpha: torch.Tensor | None = None,
    keep: Sequence[int] = SUBJECT_CLASSES,
    blur: Kernel = DEFAULTS["blur"],
    mode: Mode = DEFAULTS["mode"],
    strength: float = DEFAULTS["strength"],
    sigma: float | None = DEFAULTS["sigma"],
    falloff: float = DEFAULTS["falloff"],
    falloff_levels: int = DEFAULTS["falloff_levels"],
    feather: float = DEFAULTS["feather"],
    refine: float = DEFAULTS["refine"],
    refine_eps: float = DEFAULTS["refine_eps"],
    highlights: float = DEFAULTS["highlights"],
    highlight_threshold: float = DEFAULTS["highlight_threshold"],
    method: Method = DEFAULTS["method"],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Render a portrait: keep the subject sharp, blur the rest like a wide-aperture lens.

    Steps: subject alpha (summed softmax of the ``keep`` classes, or ``alpha``) upsampled to the
    image -> guided-filter refinement against the image (``refine``) -> feathering (``feather``)
    -> background: the whole image blurred (``mode="naive"``, the paper) or, ``"halo_free"``, the
    subject's colours estimated (:func:`~portraitseg.render.composite.estimate_foreground`), the
    subject removed and the rest renormalised; optionally graded with distance (``falloff``), in
    linear light with boosted highlights when ``highlights > 0``
    -> ``alpha * subject + (1 - alpha) * background`` (subject: the photo itself in naive mode).

    With ``blur="gaussian", mode="naive", method="exact", refine=0, feather=0, falloff=0,
    highlights=0`` and an ``alpha``, this is exactly the paper's render with ``cv2.GaussianBlur``.

    Args:
        image: photo ``(B, 3, H, W)`` in [0, 1], any size (full resolution).
        logits: segmentation logits ``(B, K, h, w)`` at any resolution (e.g. the model's), or
        probs: class probabilities ``(B, K, h, w)`` (rows summing to 1), or
        alpha: subject alpha ``(B, 1, h, w)`` in [0, 1]. Exactly one of the three.
        keep: class ids kept sharp (selective blurring), each ``< K``; ignored with ``alpha``.
        blur: ``"gaussian"`` or ``"disc"`` (lens aperture, radius ``2 sigma``).
        mode: ``"naive"`` (paper) or ``"halo_free"``.
        strength: blur sigma as a fraction of ``min(H, W)``.
        sigma: blur sigma in pixels; overrides ``strength`` when not None.
        falloff: distance (fraction of ``min(H, W)``) over which the blur grows from 0 at the
            subject's outline to full; 0 = uniform blur.
        falloff_levels: number of blur levels blended for the falloff (>= 2).
        feather: Gaussian softening of the alpha, sigma as a fraction of ``min(H, W)``; 0 = off.
        refine: guided-filter radius as a fraction of ``min(H, W)``; 0 = off.
        refine_eps: guided-filter regularisation (squared intensity units).
        highlights: bokeh highlight gain (0 = off; then the blur runs on sRGB values as given).
        highlight_threshold: sRGB luminance above which highlights are boosted.
        method: blur method, see :func:`portraitseg.render.blur.gaussian_blur`.

    Returns:
        ``(portrait, alpha)``: ``(B, 3, H, W)`` in [0, 1] and the alpha used ``(B, 1, H, W)``,
        both in the image's dtype on its device.

    Raises:
        TypeError / ValueError: bad shapes, dtypes, options, ``keep`` ids not below ``K``, or (CPU
        tensors only, to avoid device syncs) image / alpha / probs values outside [0, 1].
    """
    check_options(
        blur=blur,
        mode=mode,
        strength=strength,
        sigma=sigma,
        falloff=falloff,
        falloff_levels=falloff_levels,
        feather=feather,
        refine=refine,
        refine_eps=refine_eps,
        highlights=highlights,
        highlight_threshold=highlight_threshold,
        method=method,
    )
    check_blur_input(image)
    if image.shape[1] != 3:
        raise ValueError(f"image must have 3 (RGB) channels, shape (B, 3, H, W); got {tuple(image.shape)}")
    check_range(image, "image", hint="; scale uint8 photos with image.float() / 255 and clamp")
    dtype = image.dtype
    x = image.float() if dtype in (torch.float16, torch.bfloat16) else image
    a = _alpha_from(x, logits, probs, alpha, keep)

    short = min(x.shape[-2], x.shape[-1])
    sigma_px = float(sigma) if sigma is not None else strength * short
    radius = int(round(refine * short))
    if radius > 0:
        a = refine_alpha(a, x, radius, eps=refine_eps)
    a = feather_alpha(a, feather * short, method)

    # without blur the background is the photo, and so is the foreground (no estimate leaks in)
    foreground = estimate_foreground(x, a, method=method) if mode == "halo_free" and sigma_px > 0 else x
    background = graded_background(
        x,
        a,
        sigma_px,
        falloff * short,
        levels=int(falloff_levels),
        kernel=blur,
        mode=mode,
        method=method,
        eps=HALO_EPS,
        highlights=highlights,
        highlight_threshold=highlight_threshold,
        foreground=foreground if mode == "halo_free" else None,
    )
    if _may_overwrite(background, x, foreground, a):
        portrait = background.lerp_(foreground, a)  # saves a full-size allocation (inference only)
    else:
        portrait = alpha_composite(foreground, background, a)
    return portrait.to(dtype), a.to(dtype)


def _may_overwrite(background: torch.Tensor, *inputs: torch.Tensor) -> bool:
    if torch.is_grad_enabled() and (background.requires_grad or any(t.requires_grad for t in inputs)):
        return False
    ptr = background.untyped_storage().data_ptr()
    return all(t.untyped_storage().data_ptr() != ptr for t in inputs)


class PortraitRenderer(nn.Module):
    """Stores render options and calls :func:`render_portrait`; built from ``conf/render/*.yaml``.

    ``keep`` accepts anything :func:`portraitseg.classes.class_ids` does (None = every
    non-background class, names, ids, ``"hair,skin"``). ``subject`` (``person`` | ``face``) and
    ``person`` (options of :func:`portraitseg.subject.grabcut.person_alpha`) are stored for the
    callers that build the alpha (the CLI); ``forward`` renders whatever alpha or parse it is
    given. The other arguments are those of :func:`render_portrait` and are validated here, so a
    bad config fails at construction.

    Example:
        >>> renderer = PortraitRenderer(blur="gaussian", mode="naive", strength=0.02)
        >>> portrait, alpha = renderer(torch.rand(1, 3, 64, 64), torch.randn(1, 11, 32, 32))
        >>> portrait.shape, alpha.shape
        (torch.Size([1, 3, 64, 64]), torch.Size([1, 1, 64, 64]))
    """

    def __init__(
        self,
        *,
        keep: str | Iterable[str | int] | None = None,
        blur: Kernel = DEFAULTS["blur"],
        mode: Mode = DEFAULTS["mode"],
        strength: float = DEFAULTS["strength"],
        sigma: float | None = DEFAULTS["sigma"],
        falloff: float = DEFAULTS["falloff"],
        falloff_levels: int = DEFAULTS["falloff_levels"],
        feather: float = DEFAULTS["feather"],
        refine: float = DEFAULTS["refine"],
        refine_eps: float = DEFAULTS["refine_eps"],
        highlights: float = DEFAULTS["highlights"],
        highlight_threshold: float = DEFAULTS["highlight_threshold"],
        method: Method = DEFAULTS["method"],
        subject: str = "person",
        person: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if subject not in SUBJECTS:
            raise ValueError(f"subject={subject!r}: choose one of {', '.join(SUBJECTS)}")
        unknown = set(person or {}) - set(PERSON_DEFAULTS)
        if unknown:
            raise ValueError(f"unknown person options {sorted(unknown)}; known: {sorted(PERSON_DEFAULTS)}")
        #: what the caller should keep sharp: ``person`` (the face parse extended to the body by
        #: :func:`portraitseg.subject.grabcut.person_alpha`, a non-differentiable preprocessing step
        #: that produces the ``alpha`` input) or ``face`` (the kept classes only, the paper)
        self.subject = subject
        self.person: dict[str, Any] = {**PERSON_DEFAULTS, **(person or {})}
        check_person_options(**self.person)
        options = {
            "blur": blur,
            "mode": mode,
            "strength": float(strength),
            "sigma": None if sigma is None else float(sigma),
            "falloff": float(falloff),
            "falloff_levels": int(falloff_levels),
            "feather": float(feather),
            "refine": float(refine),
            "refine_eps": float(refine_eps),
            "highlights": float(highlights),
            "highlight_threshold": float(highlight_threshold),
            "method": method,
        }
        check_options(**options)
        self.keep: tuple[int, ...] = class_ids(keep)
        self.options: dict[str, Any] = options

    def forward(
        self,
        image: torch.Tensor,
        logits: torch.Tensor | None = None,
        *,
        probs: torch.Tensor | None = None,
        alpha: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``image (B, 3, H, W)`` + one of logits / probs ``(B, K, h, w)`` or alpha ``(B, 1, h, w)``
        -> ``(portrait (B, 3, H, W), alpha (B, 1, H, W))``."""
        return render_portrait(image, logits=logits, probs=probs, alpha=alpha, keep=self.keep, **self.options)

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in {"keep": self.keep, **self.options}.items())
