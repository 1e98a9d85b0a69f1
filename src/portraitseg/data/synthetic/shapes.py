"""Antialiased shapes for the synthetic portraits: signed distances (pixels, negative inside), their
coverage, value noise and colours."""

from __future__ import annotations

import cv2
import numpy as np


def cov(sd: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Coverage in [0, 1] of a shape from its signed distance: a ``width``-pixel linear ramp."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def ellipse(x: np.ndarray, y: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse centred at the origin."""
    k0 = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    k1 = np.sqrt((x / rx**2) ** 2 + (y / ry**2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def circle(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    return np.sqrt(x * x + y * y) - r


def below(x: np.ndarray, y: np.ndarray, f, df) -> np.ndarray:
    """Signed distance to the region under the graph ``y = f(x)`` (y grows downwards)."""
    return (f(x) - y) / np.sqrt(1.0 + df(x) ** 2)


def rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return c * x + s * y, -s * x + c * y


def square_wave(t: np.ndarray, period: float) -> np.ndarray:
    """Antialiased 0/1 square wave of ``t`` (pixels) with the given period."""
    return np.clip(np.sin(2 * np.pi * t / period) * period / (2 * np.pi) + 0.5, 0.0, 1.0)


def value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int,
                 channels: int = 1) -> np.ndarray:
    """Smooth noise in [-1, 1]: a ``cells``-wide random grid upsampled bicubically."""
    h, w = shape
    ch, cw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = rng.uniform(-1, 1, (ch, cw, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels) if channels > 1 else out.reshape(h, w)


def hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour in [0, 255] from hue in [0, 1), saturation and value in [0, 1]."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0
