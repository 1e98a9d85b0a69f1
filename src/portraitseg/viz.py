"""Figures shared by training-time logging, ``eval.py`` and the render CLI."""

from __future__ import annotations

import numpy as np
import torch

from portraitseg.classes import colorize
from portraitseg.sizing import long_side

#: Long side of each panel of the render CLI's --stages figure (smaller photos are not upscaled).
STAGES_PANEL = 768
#: Rows converted at a time by :func:`to_uint8`.
UINT8_BAND = 256


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """An image ``(C, H, W)`` or a map ``(H, W)`` in [0, 1] -> ``(H, W, C)`` / ``(H, W)`` uint8
    (rounded, saturated at 0 and 255), for figures and files; OpenCV's conversion on the CPU (about
    15x faster than the same in PyTorch at 12 MP), in bands of :data:`UINT8_BAND` rows so that no
    full-size float temporary is made (a 12 MP photo's would be 144 MB)."""
    import cv2

    planes = x.detach().float().cpu().numpy()
    if planes.ndim == 2:
        planes = planes[None]
    shape = planes.shape[1:] if x.ndim == 2 else (*planes.shape[1:], planes.shape[0])
    out = np.empty(shape, np.uint8)
    for start in range(0, planes.shape[1], UINT8_BAND):
        band = np.maximum(planes[:, start : start + UINT8_BAND].transpose(1, 2, 0), 0.0)
        rows = out[start : start + UINT8_BAND]
        rows[...] = cv2.convertScaleAbs(band, alpha=255.0).reshape(rows.shape)
    return out


def overlay(image: np.ndarray, label: np.ndarray, opacity: float = 0.55) -> np.ndarray:
    """Blend the class colours of ``label`` ``(H, W)`` over ``image`` ``(H, W, 3)`` uint8."""
    colours = colorize(label).astype(np.float32)
    mask = (label > 0)[..., None]
    out = np.where(mask, (1 - opacity) * image + opacity * colours, image)
    return out.round().astype(np.uint8)


def prediction_grid(
    images: torch.Tensor,
    targets: torch.Tensor,
    preds: torch.Tensor,
    portraits: torch.Tensor | None = None,
    mattes: torch.Tensor | None = None,
) -> np.ndarray:
    """Rows of (image | ground truth overlay | prediction overlay [| person matte] [| portrait])
    as ``(H', W', 3)`` uint8.

    Args:
        images: ``(B, 3, H, W)`` in [0, 1]; targets, preds: ``(B, H, W)`` class ids (targets of
            255, unknown, are drawn as background);
        portraits: optional ``(B, 3, H, W)`` in [0, 1] rendered from the predictions.
        mattes: optional predicted person mattes ``(B, 1, H, W)`` in [0, 1] (drawn in gray).
    """
    rows = []
    for i, (image, target, pred) in enumerate(zip(images, targets, preds, strict=True)):
        img = to_uint8(image)
        t, p = target.cpu().numpy(), pred.cpu().numpy()
        panels = [img, overlay(img, np.where(t == 255, 0, t)), overlay(img, p)]
        if mattes is not None:
            panels.append(np.repeat(to_uint8(mattes[i]), 3, axis=2))
        if portraits is not None:
            panels.append(to_uint8(portraits[i]))
        rows.append(np.concatenate(panels, axis=1))
    return np.concatenate(rows, axis=0)


def _checkerboard(h: int, w: int, cell: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    light = ((yy // cell + xx // cell) % 2 == 0)[..., None]
    return np.where(light, 200, 150).astype(np.float32) * np.ones(3, np.float32)


def stages_figure(
    rgb: np.ndarray, label: np.ndarray, alpha: np.ndarray, portrait: np.ndarray, panel: int = STAGES_PANEL
) -> np.ndarray:
    """The paper's figure: input | segmentation overlay | extracted foreground | portrait.

    Args:
        rgb, portrait: ``(H, W, 3)`` uint8; label: ``(h, w)`` class ids (any size, best the
            panel's: ``long_side(H, W, panel, upscale=False)``);
        alpha: ``(H, W)`` float in [0, 1]; the foreground is drawn over a checkerboard.
        panel: long side of each panel (never upscaled).

    Returns:
        ``(24 + H', 4 W' + 3 gap, 3)`` uint8 with a caption strip on top.
    """
    import cv2

    ph, pw = long_side(*rgb.shape[:2], panel, upscale=False)

    def fit(a: np.ndarray, interp: int = cv2.INTER_AREA) -> np.ndarray:
        return a if a.shape[:2] == (ph, pw) else cv2.resize(a, (pw, ph), interpolation=interp)

    image = fit(rgb)
    seg = overlay(image, fit(label.astype(np.uint8), cv2.INTER_NEAREST))
    a = fit(alpha.astype(np.float32))[..., None]
    fg = (image.astype(np.float32) * a + _checkerboard(ph, pw) * (1 - a)).round().astype(np.uint8)
    panels = [image, seg, fg, fit(portrait)]
    captions = ["input", "segmentation", "foreground", "portrait"]
    gap = 4
    bar = 24
    out = np.full((bar + ph, 4 * pw + 3 * gap, 3), 255, np.uint8)
    for i, (p, text) in enumerate(zip(panels, captions, strict=True)):
        x0 = i * (pw + gap)
        out[bar:, x0 : x0 + pw] = p
        font_scale = 0.5 if pw >= 90 else 0.3
        cv2.putText(out, text, (x0 + 4, bar - 7), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out
