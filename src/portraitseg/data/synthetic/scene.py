"""The pixel grid of one synthetic portrait and the detailed background scene drawn on it."""

from __future__ import annotations

import numpy as np

from portraitseg.data.synthetic.shapes import (
    circle,
    cov,
    hsv,
    rotate,
    square_wave,
    value_noise,
)


class Canvas:
    """The pixel grid of one sample and rectangular windows into it."""

    def __init__(self, h: int, w: int) -> None:
        self.h, self.w = h, w
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def window(self, x: float, y: float, rx: float, ry: float | None = None):
        """Slices of the pixels within ``rx`` / ``ry`` of ``(x, y)`` (plus a margin), or None."""
        ry = rx if ry is None else ry
        y0, y1 = max(0, int(np.floor(y - ry)) - 1), min(self.h, int(np.ceil(y + ry)) + 2)
        x0, x1 = max(0, int(np.floor(x - rx)) - 1), min(self.w, int(np.ceil(x + rx)) + 2)
        return (slice(y0, y1), slice(x0, x1)) if y0 < y1 and x0 < x1 else None


def draw_background(rng: np.random.Generator, cv: Canvas) -> np.ndarray:
    """A detailed scene ``(H, W, 3)`` float in [0, 255]: gradient + textures + highlights."""
    h, w, xx, yy = cv.h, cv.w, cv.xx, cv.yy
    s = min(h, w)
    c1 = hsv(rng.random(), rng.uniform(0.05, 0.7), rng.uniform(0.25, 0.95))
    c2 = hsv(rng.random(), rng.uniform(0.05, 0.7), rng.uniform(0.15, 0.9))
    ang = float(rng.uniform(0, 2 * np.pi))
    t = (np.cos(ang) * (xx - w / 2) + np.sin(ang) * (yy - h / 2)) / (0.75 * max(h, w)) + 0.5
    t = np.clip(t, 0, 1)[..., None]
    bg = c1 * (1 - t) + c2 * t

    # Low-frequency colour noise (walls, foliage) and fine grain (paper, fabric).
    bg += 30 * value_noise(rng, (h, w), int(rng.integers(3, 7)), 3)
    bg += rng.uniform(8, 22) * value_noise(rng, (h, w), int(rng.integers(12, 33)), 1)[..., None]

    kinds = rng.permutation(["stripes", "checker", "blocks", "lines"])[: rng.integers(1, 4)]
    for kind in kinds:
        colour = hsv(rng.random(), rng.uniform(0, 0.8), rng.uniform(0.1, 1.0))
        opacity = rng.uniform(0.35, 0.9)
        if kind == "stripes":
            a = float(rng.uniform(0, np.pi))
            m = square_wave(np.cos(a) * xx + np.sin(a) * yy, rng.uniform(0.04, 0.14) * s)
        elif kind == "checker":
            x, y = rotate(xx, yy, rng.uniform(-0.4, 0.4))
            p = rng.uniform(0.06, 0.16) * s
            m = np.abs(square_wave(x, p) - square_wave(y, p))
        elif kind == "blocks":  # windows, frames, shelves
            m = np.zeros((h, w), np.float32)
            for _ in range(rng.integers(3, 9)):
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                rx, ry = rng.uniform(0.03, 0.2) * s, rng.uniform(0.03, 0.2) * s
                strength = rng.uniform(0.5, 1.0)
                sl = cv.window(cx, cy, rx + 1, ry + 1)
                if sl is not None:
                    d = np.maximum(np.abs(xx[sl] - cx) - rx, np.abs(yy[sl] - cy) - ry)
                    m[sl] = np.maximum(m[sl], cov(d) * strength)
        else:  # thin lines (cables, edges)
            m = np.zeros((h, w), np.float32)
            for _ in range(rng.integers(2, 7)):
                a = float(rng.uniform(0, np.pi))
                off, half = rng.uniform(-0.5, 0.5) * s, rng.uniform(0.3, 1.5)
                d = np.abs(np.cos(a) * (xx - w / 2) + np.sin(a) * (yy - h / 2) - off)
                m = np.maximum(m, cov(d - half))
        m = (m * opacity)[..., None]
        bg = bg * (1 - m) + colour * m

    # Bright spots (lamps, sun through leaves): the highlights that make blur kernels visible.
    for _ in range(rng.integers(4, 20)):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.006, 0.035) * s + 0.5
        strength = rng.uniform(0.6, 1.0)
        tint = np.array([255, rng.uniform(215, 255), rng.uniform(160, 255)], np.float32)
        sl = cv.window(cx, cy, r + 1)
        if sl is not None:
            glow = (cov(circle(xx[sl] - cx, yy[sl] - cy, r)) * strength)[..., None]
            bg[sl] = bg[sl] * (1 - glow) + tint * glow
    return np.clip(bg, 0, 255)

