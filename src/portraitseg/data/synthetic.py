"""Deterministic procedural portraits in the HELEN* layout, with their compositing layers.

Each sample is a person (face, hair, neck, shoulders, clothes) over a detailed background, drawn
as a stack of antialiased layers. Besides the image and its Helen label map, the generator keeps
the ground truth a portrait renderer is measured against: the clean background and the whole
person as an RGBA foreground with a soft alpha (soft at the hair). ``image`` is exactly the
composite of the stored layers::

    image = round(fg * alpha / 255 + background * (1 - alpha / 255))

Labels follow Helen: neck, shoulders and clothes belong to the foreground layer but are labelled
background (0); every other pixel gets the class whose visible coverage is largest (the argmax of
the per-class layer weights after compositing), so a hair pixel is one where hair covers more than
half of it, an eye pixel one where the eye covers more than half of the skin, and so on.

On disk (see :func:`generate`)::

    <root>/train.txt, test.txt                   "<image> <label>" per line, relative to <root>
    <root>/{train,test}/images/synth_<i>.png      RGB image (PNG: lossless, byte-reproducible)
    <root>/{train,test}/labels/synth_<i>.png      8-bit class ids 0..10
    <root>/layers/background/synth_<i>.png        RGB background without the person
    <root>/layers/foreground/synth_<i>.png        RGBA person, straight (not premultiplied) alpha
    <root>/manifest.json                          parameters + sha256 of every file above

Sample ``i`` depends only on ``(seed, i, size)``: the same seed gives byte-identical files (on the
same numpy / OpenCV / zlib builds), and growing ``n`` keeps the images already generated.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from portraitseg.classes import CLASS_NAMES, NUM_CLASSES
from portraitseg.io import atomic_write, sha256_file

log = logging.getLogger(__name__)

#: Bumped whenever the drawing changes, so a cached dataset from an older generator is replaced.
GENERATOR_VERSION = 1
MANIFEST_NAME = "manifest.json"
_GENERATOR = "portraitseg.data.synthetic"
DEFAULT_ROOT = Path("data/synthetic")
MIN_SIZE, MAX_SIZE = 32, 4096

_SKIN = 1
_BROW = (2, 3)  # viewer's left, viewer's right
_EYE = (4, 5)
_NOSE, _UPPER_LIP, _INNER_MOUTH, _LOWER_LIP, _HAIR = 6, 7, 8, 9, 10
assert CLASS_NAMES[_HAIR] == "hair" and CLASS_NAMES[_EYE[0]] == "left_eye"

_SKIN_TONES = np.array(
    [[255, 224, 196], [241, 194, 167], [224, 172, 138], [198, 134, 103], [161, 102, 72],
     [120, 75, 52], [87, 56, 40]], dtype=np.float32)
_HAIR_COLOURS = np.array(
    [[22, 18, 16], [48, 32, 24], [92, 60, 38], [136, 62, 34], [196, 160, 106], [168, 164, 158],
     [70, 40, 90]], dtype=np.float32)
_HAIR_WEIGHTS = np.array([0.28, 0.22, 0.18, 0.08, 0.12, 0.08, 0.04])
_IRIS_COLOURS = np.array(
    [[88, 54, 30], [48, 34, 24], [70, 110, 160], [78, 118, 78], [108, 118, 128]], dtype=np.float32)


@dataclass(frozen=True)
class SyntheticSample:
    """One generated portrait.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB, the composite of ``foreground`` over ``background``.
        label: ``(H, W)`` uint8 Helen class ids 0..10.
        background: ``(H, W, 3)`` uint8 RGB scene without the person.
        foreground: ``(H, W, 4)`` uint8 RGBA person (straight alpha; RGB is 0 where alpha is 0).
    """

    image: np.ndarray
    label: np.ndarray
    background: np.ndarray
    foreground: np.ndarray

    @property
    def alpha(self) -> np.ndarray:
        """``(H, W)`` float32 person alpha in [0, 1]."""
        return self.foreground[..., 3].astype(np.float32) / 255.0


# --------------------------------------------------------------------------------------------
# Signed distances (pixels, negative inside) and coverage.


def _cov(sd: np.ndarray, width: float = 1.0) -> np.ndarray:
    """Coverage in [0, 1] of a shape from its signed distance: a ``width``-pixel linear ramp."""
    return np.clip(0.5 - sd / width, 0.0, 1.0)


def _ellipse(x: np.ndarray, y: np.ndarray, rx: float, ry: float) -> np.ndarray:
    """Approximate signed distance to an axis-aligned ellipse centred at the origin."""
    k0 = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    k1 = np.sqrt((x / rx**2) ** 2 + (y / ry**2) ** 2)
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _circle(x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    return np.sqrt(x * x + y * y) - r


def _below(x: np.ndarray, y: np.ndarray, f, df) -> np.ndarray:
    """Signed distance to the region under the graph ``y = f(x)`` (y grows downwards)."""
    return (f(x) - y) / np.sqrt(1.0 + df(x) ** 2)


def _rotate(x: np.ndarray, y: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray]:
    c, s = float(np.cos(angle)), float(np.sin(angle))
    return c * x + s * y, -s * x + c * y


def _square_wave(t: np.ndarray, period: float) -> np.ndarray:
    """Antialiased 0/1 square wave of ``t`` (pixels) with the given period."""
    return np.clip(np.sin(2 * np.pi * t / period) * period / (2 * np.pi) + 0.5, 0.0, 1.0)


def _value_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int,
                 channels: int = 1) -> np.ndarray:
    """Smooth noise in [-1, 1]: a ``cells``-wide random grid upsampled bicubically."""
    h, w = shape
    ch, cw = max(2, round(cells * h / max(h, w))), max(2, round(cells * w / max(h, w)))
    grid = rng.uniform(-1, 1, (ch, cw, channels)).astype(np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    return out.reshape(h, w, channels) if channels > 1 else out.reshape(h, w)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """An RGB colour in [0, 255] from hue in [0, 1), saturation and value in [0, 1]."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float32) * 255.0


# --------------------------------------------------------------------------------------------
# Drawing.


class _Canvas:
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


class _Frame:
    """A rotated frame: ``u`` along the rotated x axis, ``v`` along the rotated y axis (down)."""

    def __init__(self, cx: float, cy: float, angle: float) -> None:
        self.cx, self.cy = float(cx), float(cy)
        self.c, self.s = float(np.cos(angle)), float(np.sin(angle))

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + self.c * u - self.s * v, self.cy + self.s * u + self.c * v

    def window(self, cv: _Canvas, u: float, v: float, r: float):
        return cv.window(*self.to_image(u, v), r)

    def coords(self, cv: _Canvas, sl) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = cv.xx[sl] - self.cx, cv.yy[sl] - self.cy
        return self.c * dx + self.s * dy, -self.s * dx + self.c * dy


def _background(rng: np.random.Generator, cv: _Canvas) -> np.ndarray:
    """A detailed scene ``(H, W, 3)`` float in [0, 255]: gradient + textures + highlights."""
    h, w, xx, yy = cv.h, cv.w, cv.xx, cv.yy
    s = min(h, w)
    c1 = _hsv(rng.random(), rng.uniform(0.05, 0.7), rng.uniform(0.25, 0.95))
    c2 = _hsv(rng.random(), rng.uniform(0.05, 0.7), rng.uniform(0.15, 0.9))
    ang = float(rng.uniform(0, 2 * np.pi))
    t = (np.cos(ang) * (xx - w / 2) + np.sin(ang) * (yy - h / 2)) / (0.75 * max(h, w)) + 0.5
    t = np.clip(t, 0, 1)[..., None]
    bg = c1 * (1 - t) + c2 * t

    # Low-frequency colour noise (walls, foliage) and fine grain (paper, fabric).
    bg += 30 * _value_noise(rng, (h, w), int(rng.integers(3, 7)), 3)
    bg += rng.uniform(8, 22) * _value_noise(rng, (h, w), int(rng.integers(12, 33)), 1)[..., None]

    kinds = rng.permutation(["stripes", "checker", "blocks", "lines"])[: rng.integers(1, 4)]
    for kind in kinds:
        colour = _hsv(rng.random(), rng.uniform(0, 0.8), rng.uniform(0.1, 1.0))
        opacity = rng.uniform(0.35, 0.9)
        if kind == "stripes":
            a = float(rng.uniform(0, np.pi))
            m = _square_wave(np.cos(a) * xx + np.sin(a) * yy, rng.uniform(0.04, 0.14) * s)
        elif kind == "checker":
            x, y = _rotate(xx, yy, rng.uniform(-0.4, 0.4))
            p = rng.uniform(0.06, 0.16) * s
            m = np.abs(_square_wave(x, p) - _square_wave(y, p))
        elif kind == "blocks":  # windows, frames, shelves
            m = np.zeros((h, w), np.float32)
            for _ in range(rng.integers(3, 9)):
                cx, cy = rng.uniform(0, w), rng.uniform(0, h)
                rx, ry = rng.uniform(0.03, 0.2) * s, rng.uniform(0.03, 0.2) * s
                strength = rng.uniform(0.5, 1.0)
                sl = cv.window(cx, cy, rx + 1, ry + 1)
                if sl is not None:
                    d = np.maximum(np.abs(xx[sl] - cx) - rx, np.abs(yy[sl] - cy) - ry)
                    m[sl] = np.maximum(m[sl], _cov(d) * strength)
        else:  # thin lines (cables, edges)
            m = np.zeros((h, w), np.float32)
            for _ in range(rng.integers(2, 7)):
                a = float(rng.uniform(0, np.pi))
                off, half = rng.uniform(-0.5, 0.5) * s, rng.uniform(0.3, 1.5)
                d = np.abs(np.cos(a) * (xx - w / 2) + np.sin(a) * (yy - h / 2) - off)
                m = np.maximum(m, _cov(d - half))
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
            glow = (_cov(_circle(xx[sl] - cx, yy[sl] - cy, r)) * strength)[..., None]
            bg[sl] = bg[sl] * (1 - glow) + tint * glow
    return np.clip(bg, 0, 255)


@dataclass
class _Layer:
    window: tuple[slice, slice]  # where the layer is drawn
    alpha: np.ndarray  # (h, w) coverage in [0, 1] over the window
    colour: np.ndarray  # (h, w, 3) or (3,) in [0, 255]
    classes: Sequence[tuple[int, np.ndarray | float]]  # class id -> share of alpha (sums to 1)


def _periodic(values: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Look up a function of the angle tabulated on ``len(values)`` points over [-pi, pi)."""
    n = len(values)
    pos = (phi + np.pi) * (n / (2 * np.pi))
    i0 = np.floor(pos).astype(np.int64)
    f = (pos - i0).astype(np.float32)
    return values[i0 % n] * (1 - f) + values[(i0 + 1) % n] * f


def _person(rng: np.random.Generator, cv: _Canvas) -> list[_Layer]:
    """The person as layers, back to front."""
    h, w = cv.h, cv.w
    s = min(h, w)
    a = rng.uniform(0.16, 0.24) * s  # face half-width
    b = a * rng.uniform(1.22, 1.42)  # face half-height
    cx = w / 2 + rng.uniform(-0.13, 0.13) * w
    cy = h * rng.uniform(0.34, 0.48)
    tilt = float(np.deg2rad(rng.uniform(-14, 14)))
    face = _Frame(cx, cy, tilt)  # u right, v down, pixels, origin at the face centre
    yaw = rng.uniform(-0.08, 0.08) * a  # features shifted sideways: a hint of head turn

    skin = np.clip(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.uniform(-10, 10, 3), 0, 255)
    skin = skin.astype(np.float32)
    hair_c = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS)]
    hair_c = np.clip(hair_c * rng.uniform(0.85, 1.15) + rng.uniform(-6, 6, 3), 0, 255)
    hair_c = hair_c.astype(np.float32)
    lx, ly, lz = rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.1), 1.0
    norm = float(np.sqrt(lx * lx + ly * ly + lz * lz))
    lx, ly, lz = lx / norm, ly / norm, lz / norm
    exposure = rng.uniform(0.85, 1.1)
    blush_amount = rng.uniform(0, 0.12)
    skin_noise = _value_noise(rng, (h, w), 24)
    layers: list[_Layer] = []

    def skin_at(sl, u, v):
        """Skin colour lit as an ellipsoid, with texture and cheek blush."""
        nx, ny = np.clip(u / a, -1, 1), np.clip(v / b, -1, 1)
        nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
        lambert = np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
        shading = (0.58 + 0.47 * lambert) * exposure * (1 + 0.03 * skin_noise[sl])
        blush = blush_amount * (
            np.exp(-((u + 0.55 * a) ** 2 + (v - 0.25 * b) ** 2) / (0.3 * a) ** 2)
            + np.exp(-((u - 0.55 * a) ** 2 + (v - 0.25 * b) ** 2) / (0.3 * a) ** 2))
        tint = 1 + blush[..., None] * np.array([0.3, -0.25, -0.25], np.float32)
        return skin * shading[..., None] * tint, shading

    # Clothes: shoulders widening downwards, in a frame that follows only part of the tilt.
    neck_x, neck_y = face.to_image(0.0, 1.3 * b)
    sh_y = neck_y + b * rng.uniform(-0.05, 0.2)
    sw = a * rng.uniform(1.7, 2.6)
    drop = b * rng.uniform(0.2, 0.45)
    torso = _Frame(neck_x, sh_y, 0.3 * tilt)
    cloth = _hsv(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.9))
    cloth2 = _hsv(rng.random(), rng.uniform(0, 0.9), rng.uniform(0.2, 1.0))
    pattern, p_size, p_skew = rng.integers(4), rng.uniform(0.04, 0.11) * s, rng.uniform(-0.2, 0.2)
    folds = 1 + 0.12 * _value_noise(rng, (h, w), 6)
    y0 = max(0, int(sh_y - 0.2 * sw - 2))
    if y0 < h:
        sl = (slice(y0, h), slice(0, w))
        tu, tv = torso.coords(cv, sl)
        top = _below(tu, tv, lambda x: drop * np.minimum((x / sw) ** 2, 1.5),
                     lambda x: np.where((x / sw) ** 2 < 1.5, 2 * drop * x / sw**2, 0.0))
        side = np.abs(tu) - (sw * 1.08 + 0.35 * np.maximum(tv, 0))
        body = _cov(np.maximum(top, side))
        if pattern == 1:
            m = _square_wave(tv + p_skew * tu, p_size)
        elif pattern == 2:
            m = np.abs(_square_wave(tu, p_size) - _square_wave(tv, p_size))
        elif pattern == 3:
            m = _cov(_circle((tu % p_size) - p_size / 2, (tv % p_size) - p_size / 2,
                             p_size * 0.2))
        else:
            m = np.zeros_like(tu)
        shade = np.clip(1.0 - 0.25 * np.abs(tu) / (sw * 1.5), 0.6, 1.0) * folds[sl] * exposure
        cloth_rgb = (cloth * (1 - m[..., None]) + cloth2 * m[..., None]) * shade[..., None]
        layers.append(_Layer(sl, body, cloth_rgb, [(0, 1.0)]))

    # Hair: an ellipse around the head (long hair reaches the shoulders) whose outline wobbles
    # and breaks into strands; its alpha is soft and stringy near the outline.
    bald = rng.random() < 0.06
    hair_v = -b * rng.uniform(0.05, 0.2)
    hrx = a * rng.uniform(1.08, 1.35)
    hry_top = b * rng.uniform(1.0, 1.22)
    hry_bot = b * (rng.uniform(1.2, 2.6) if rng.random() < 0.35 else rng.uniform(0.3, 0.7))
    table = np.linspace(-np.pi, np.pi, 2048, endpoint=False)
    ry = np.where(np.sin(table) < 0, hry_top, hry_bot)
    outline = 1.0 / np.sqrt((np.cos(table) / hrx) ** 2 + (np.sin(table) / ry) ** 2)
    for k in range(2, 8):
        outline *= 1 + rng.uniform(0, 0.05) / k * np.sin(k * table + rng.uniform(0, 2 * np.pi))
    for k in rng.integers(30, 120, 5):
        outline += rng.uniform(0.001, 0.004) * s * np.sin(k * table + rng.uniform(0, 2 * np.pi))
    strands = (0.5 + 0.5 * np.sin(rng.integers(40, 90) * table + rng.uniform(0, 2 * np.pi))) * \
              (0.5 + 0.5 * np.sin(rng.integers(90, 160) * table + rng.uniform(0, 2 * np.pi)))
    outline, strands = outline.astype(np.float32), strands.astype(np.float32)
    soft = max(1.0, 0.02 * s)
    flow_k, sheen_at, sheen = rng.integers(60, 140), rng.uniform(0.55, 0.8), rng.uniform(15, 45)
    flow_noise = _value_noise(rng, (h, w), 8)
    hair_win = face.window(cv, 0.0, hair_v, float(outline.max()) + 3 * soft)
    hair_alpha = hair_rgb = None
    if not bald and hair_win is not None:
        hu, hv = face.coords(cv, hair_win)
        hv = hv - hair_v
        rho = np.sqrt(hu * hu + hv * hv)
        phi = np.arctan2(hv, hu)
        radius = _periodic(outline, phi)
        hair_sd = rho - radius
        band = np.clip((hair_sd + 3 * soft) / (3 * soft), 0, 1)  # 0 inside, 1 at the outline
        hair_alpha = _cov(hair_sd, soft) * (1 - 0.65 * band * _periodic(strands, phi))
        flow = np.sin(flow_k * phi + 3 * flow_noise[hair_win])
        gloss = np.exp(-((rho / np.maximum(radius, 1) - sheen_at) / 0.1) ** 2) * sheen
        hair_rgb = hair_c * (0.78 + 0.16 * flow)[..., None] * exposure + gloss[..., None]
        layers.append(_Layer(hair_win, hair_alpha, hair_rgb, [(_HAIR, 1.0)]))

    # Neck, continued by a V or round neckline into the clothes: skin, shadowed under the chin.
    nw = a * rng.uniform(0.42, 0.56)
    vdepth, vslope = rng.uniform(0.15, 0.55) * b, rng.uniform(0.7, 1.5)
    scoop = rng.uniform(0.08, 0.3) * b  # depth of a round neckline
    sl = face.window(cv, 0.0, 1.2 * b, 1.1 * b)
    if sl is not None:
        u, v = face.coords(cv, sl)
        tu, tv = torso.coords(cv, sl)
        neckline = (lambda x: scoop * (1 - (x / (1.3 * nw)) ** 2),
                    lambda x: -2 * scoop * x / (1.3 * nw) ** 2)
        neck_sd = np.maximum(np.abs(u) - nw * (1 + 0.15 * np.clip(v / b - 0.8, 0, 2)),
                             np.maximum(0.3 * b - v, -_below(tu, tv, *neckline)))
        vneck = np.maximum(np.maximum(vslope * np.abs(tu) + tv - vdepth, np.abs(tu) - nw), -tv)
        neck = _cov(np.minimum(neck_sd, vneck))
        chin_shadow = 0.62 + 0.38 * np.clip((v - 0.9 * b) / (0.45 * b), 0, 1)
        layers.append(_Layer(sl, neck, skin * (0.88 * exposure * chin_shadow)[..., None],
                             [(0, 1.0)]))

    # Face: an egg (narrower jaw).
    taper = rng.uniform(0.1, 0.28)
    sl = face.window(cv, 0.0, 0.0, b + 2)
    if sl is not None:
        u, v = face.coords(cv, sl)
        fu = u / (1 - taper * np.clip(v / b, 0, 1) ** 2)
        layers.append(_Layer(sl, _cov(_ellipse(fu, v, a, b)), skin_at(sl, u, v)[0],
                             [(_SKIN, 1.0)]))

    # Brows and eyes, in face coordinates. The first of each pair is the viewer's left.
    eye_v = b * rng.uniform(-0.16, -0.02)
    eye_du = a * rng.uniform(0.36, 0.46)
    eye_rx = a * rng.uniform(0.17, 0.23)
    eye_ry = eye_rx * rng.uniform(0.38, 0.55)
    brow_v = eye_v - b * rng.uniform(0.16, 0.24)
    brow_rx = a * rng.uniform(0.24, 0.33)
    brow_ry = max(0.9, b * rng.uniform(0.03, 0.06))
    brow_arch = brow_ry * rng.uniform(0.5, 2.5)
    brow_c = hair_c * rng.uniform(0.6, 0.9) if not bald else skin * 0.45
    gaze_u, gaze_v = rng.uniform(-0.35, 0.35) * eye_rx, rng.uniform(-0.15, 0.15) * eye_ry
    iris_c = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))]
    iris_r = eye_ry * rng.uniform(0.85, 1.05)
    sclera = np.array([232, 226, 218], np.float32)
    for side, cls_brow, cls_eye in ((-1, _BROW[0], _EYE[0]), (1, _BROW[1], _EYE[1])):
        ex = side * eye_du + yaw
        # Brow: an arched band, thicker at the inner end.
        bx, turn = ex + side * 0.05 * a, side * rng.uniform(0, 0.15)
        sl = face.window(cv, bx, brow_v, 1.3 * brow_rx + brow_arch + 2)
        if sl is not None:
            u, v = face.coords(cv, sl)
            bu, bv = _rotate(u - bx, v - brow_v, turn)
            inner = np.clip(1 - 0.35 * side * bu / brow_rx, 0.55, 1.4)
            bv = (bv + brow_arch * (1 - (bu / brow_rx) ** 2)) / inner
            grain = 1 + 0.15 * np.sin(1.3 * bu + 0.7 * side * bv)
            layers.append(_Layer(sl, _cov(_ellipse(bu, bv, brow_rx, brow_ry)),
                                 brow_c * (grain * exposure)[..., None], [(cls_brow, 1.0)]))
        # Eye: a lens of two circles; sclera, iris, pupil and the dark line of the upper lid.
        sl = face.window(cv, ex, eye_v, eye_rx + 2)
        if sl is not None:
            u, v = face.coords(cv, sl)
            rc = (eye_rx**2 + eye_ry**2) / (2 * eye_ry)
            eu, ev = u - ex, v - eye_v
            upper = _circle(eu, ev - (rc - eye_ry), rc)  # its boundary is the upper lid
            lower = _circle(eu, ev + (rc - eye_ry), rc)
            iu, iv = eu - gaze_u, ev - gaze_v
            iris = _cov(_circle(iu, iv, iris_r))[..., None]
            pupil = _cov(_circle(iu, iv, iris_r * 0.45))[..., None]
            lid = np.clip(1.0 + upper / max(1.0, 0.3 * eye_ry), 0, 1)[..., None]
            col = sclera * (1 - 0.25 * np.minimum((eu / eye_rx) ** 2, 1))[..., None]
            iris_shade = (0.8 + 0.4 * np.clip(-iv / iris_r, 0, 1))[..., None]
            col = col * (1 - iris) + iris_c * iris_shade * iris
            col = col * (1 - pupil) + 12 * pupil
            col = col * (1 - lid) + skin * 0.2 * lid
            layers.append(_Layer(sl, _cov(np.maximum(upper, lower)), col * exposure,
                                 [(cls_eye, 1.0)]))

    # Nose: a narrow bridge between the eyes widening to a rounded base with nostrils.
    nose_top = eye_v - 0.04 * b
    nose_bot = b * rng.uniform(0.3, 0.4)
    top_w, bot_w = a * 0.07, a * rng.uniform(0.18, 0.26)
    nose_u = yaw * 1.3
    sl = face.window(cv, nose_u, (nose_top + nose_bot) / 2, (nose_bot - nose_top) / 2 + bot_w + 2)
    if sl is not None:
        u, v = face.coords(cv, sl)
        nu = u - nose_u
        slope = (bot_w - top_w) / (nose_bot - nose_top)
        wedge = np.maximum(
            (np.abs(nu) - (top_w + slope * (v - nose_top))) / np.sqrt(1 + slope**2),
            np.maximum(nose_top - v, v - nose_bot + 0.1 * b))
        ball = _ellipse(nu, v - (nose_bot - 0.08 * b), bot_w * 1.05, 0.1 * b)
        away = np.clip(-nu * np.sign(lx) / bot_w, 0, 1)  # the side turned away from the light
        tip = np.exp(-((nu / (0.4 * bot_w)) ** 2 + ((v - nose_bot + 0.1 * b) / (0.06 * b)) ** 2))
        nostrils = sum(_cov(_ellipse(nu - k * 0.5 * bot_w, v - (nose_bot - 0.03 * b),
                                     0.22 * bot_w, 0.025 * b + 0.4)) for k in (-1, 1))
        shade = (1 - 0.2 * away + 0.12 * tip) * (1 - 0.7 * nostrils)
        layers.append(_Layer(sl, _cov(np.minimum(wedge, ball)),
                             skin_at(sl, u, v)[0] * shade[..., None], [(_NOSE, 1.0)]))

    # Mouth: one layer (no seams between its parts) split into upper lip, inner mouth, lower lip.
    mv = b * rng.uniform(0.52, 0.62)
    mw = a * rng.uniform(0.3, 0.44)
    ut, lt = b * rng.uniform(0.05, 0.09), b * rng.uniform(0.07, 0.12)
    is_open = rng.random() < 0.4
    oh = b * (rng.uniform(0.06, 0.16) if is_open else rng.uniform(0.01, 0.025))
    smile = b * rng.uniform(-0.03, 0.08)
    bow = rng.uniform(0.0, 0.35)
    lip_c = skin * np.array([0.82, 0.52, 0.52], np.float32) + np.array([40, 0, 8], np.float32)
    if rng.random() < 0.2:  # lipstick
        lip_c = _hsv(rng.uniform(0.9, 1.0), rng.uniform(0.5, 0.9), rng.uniform(0.45, 0.85))
    has_teeth = is_open and rng.random() < 0.7
    mouth_u = yaw * 1.2
    sl = face.window(cv, mouth_u, mv, mw + ut + lt + oh + abs(smile) + 2)
    if sl is not None:
        u, v = face.coords(cv, sl)
        mu, my = u - mouth_u, v - mv

        def curve(c, dip=0.0):  # y = f(x) through both corners, c at the centre; and f'
            prof = np.clip(1 - (mu / mw) ** 2, 0, 1)
            dprof = np.where(np.abs(mu) < mw, -2 * mu / mw**2, 0.0)
            notch = 1 - dip * np.exp(-(mu / (0.18 * mw)) ** 2)
            return (lambda x: -smile * (x / mw) ** 2 + c * prof * notch,
                    lambda x: -2 * smile * x / mw**2 + c * dprof)

        top, bottom = curve(-(ut + oh / 2), bow), curve(oh / 2 + lt)
        open_top, open_bottom = curve(-oh / 2), curve(oh / 2)
        outer = np.maximum(np.maximum(_below(mu, my, *top), -_below(mu, my, *bottom)),
                           np.abs(mu) - mw)
        in_upper = _cov(-_below(mu, my, *open_top))  # above the opening's top edge
        in_lower = _cov(_below(mu, my, *open_bottom))  # below its bottom edge
        inner = np.clip(1 - in_upper - in_lower, 0, 1)
        teeth = _cov(my - (open_top[0](mu) + 0.45 * oh)) * float(has_teeth)
        inner_c = np.array([70, 18, 24], np.float32) * (1 - teeth[..., None]) + \
            np.array([225, 220, 205], np.float32) * teeth[..., None]
        gloss = 1.05 + 0.2 * np.exp(-((my - oh / 2 - lt / 2) / lt) ** 2)
        shading = skin_at(sl, u, v)[1][..., None]
        rgb = (lip_c * 0.88 * in_upper[..., None] + inner_c * inner[..., None]
               + lip_c * (gloss * in_lower)[..., None]) * shading
        total = np.maximum(in_upper + inner + in_lower, 1e-6)
        layers.append(_Layer(sl, _cov(outer), rgb, [(_UPPER_LIP, in_upper / total),
                                                     (_INNER_MOUTH, inner / total),
                                                     (_LOWER_LIP, in_lower / total)]))

    # Fringe: the hair above a wavy hairline is drawn again, over the face.
    h0 = rng.uniform(0.25, 0.4) if rng.random() < 0.15 else rng.uniform(0.45, 0.72)
    h1, part = rng.uniform(0.3, 0.65), rng.uniform(-0.15, 0.15)
    k1, k2, ph1, ph2 = rng.uniform(0.3, 0.6), rng.uniform(1.5, 3.0), *rng.uniform(0, 6.3, 2)
    amp = 0.02 * s
    if hair_alpha is not None:
        u, v = face.coords(cv, hair_win)
        line = (lambda x: b * (-h0 + h1 * (x / a) ** 2 + part * x / a)
                + amp * (0.3 * np.sin(k1 * x + ph1) + 0.15 * np.sin(k2 * x + ph2)),
                lambda x: b * (2 * h1 * x / a**2 + part / a)
                + amp * (0.3 * k1 * np.cos(k1 * x + ph1) + 0.15 * k2 * np.cos(k2 * x + ph2)))
        front = _cov(-_below(u, v, *line), max(1.0, 0.012 * s))
        layers.append(_Layer(hair_win, hair_alpha * front, hair_rgb, [(_HAIR, 1.0)]))
    return layers


def make_sample(index: int, seed: int = 0, size: int | tuple[int, int] = 256) -> SyntheticSample:
    """Draw synthetic portrait number ``index`` of the dataset with this ``seed``.

    Args:
        index: sample index (>= 0); samples are independent of each other.
        seed: dataset seed (>= 0).
        size: ``S`` for ``S x S`` or ``(H, W)``.

    Returns:
        A :class:`SyntheticSample` whose ``image`` equals the rounded composite of ``foreground``
        over ``background``.
    """
    h, w = _parse_size(size)
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng([seed, index])
    cv = _Canvas(h, w)
    bg = _background(rng, cv)

    # Composite back to front: premultiplied colour, alpha, and the visible weight of every class
    # (the background plane starts with weight 1; each layer hides a share of what lies below).
    colour = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    weights = np.zeros((NUM_CLASSES, h, w), np.float32)
    weights[0] = 1.0
    for layer in _person(rng, cv):
        sl, a = layer.window, layer.alpha.astype(np.float32)
        keep = 1.0 - a
        colour[sl] = colour[sl] * keep[..., None] + np.clip(layer.colour, 0, 255) * a[..., None]
        alpha[sl] = alpha[sl] * keep + a
        weights[:, sl[0], sl[1]] *= keep
        for cls, share in layer.classes:
            weights[cls][sl] += a * share
    label = np.argmax(weights, axis=0).astype(np.uint8)

    alpha8 = np.round(np.clip(alpha, 0, 1) * 255).astype(np.uint8)
    fg = np.round(np.clip(colour / np.maximum(alpha, 1e-6)[..., None], 0, 255)).astype(np.uint8)
    fg[alpha8 == 0] = 0
    bg8 = np.round(bg).astype(np.uint8)
    a16 = alpha8.astype(np.uint16)[..., None]
    image = ((fg * a16 + bg8 * (255 - a16) + 127) // 255).astype(np.uint8)
    return SyntheticSample(image=image, label=label, background=bg8,
                           foreground=np.dstack([fg, alpha8]))


# --------------------------------------------------------------------------------------------
# Dataset on disk.


def _parse_size(size: int | Sequence[int] | str) -> tuple[int, int]:
    """``256``, ``"256"``, ``(H, W)`` or ``"HxW"`` -> ``(H, W)``, checked."""
    if isinstance(size, str):
        parts = size.lower().split("x")
        try:
            size = tuple(int(p) for p in parts) if len(parts) == 2 else int(size)
        except ValueError:
            raise ValueError(f"size {size!r}: expected an integer or HxW such as 128x96") from None
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    elif isinstance(size, Sequence) and len(size) == 2:
        hw = (int(size[0]), int(size[1]))
    else:
        raise ValueError(f"size {size!r}: expected an int or (H, W)")
    if not all(MIN_SIZE <= x <= MAX_SIZE for x in hw):
        raise ValueError(f"size {hw}: height and width must lie in {MIN_SIZE}..{MAX_SIZE}")
    return hw


def _sample_id(i: int) -> str:
    return f"synth_{i:04d}"


def _split(n: int, test_fraction: float) -> dict[str, list[int]]:
    """The last ``round(n * test_fraction)`` samples (at least one when ``n >= 2``) are test."""
    n_test = 0 if n < 2 else min(n - 1, max(1, round(n * test_fraction)))
    return {"train": list(range(n - n_test)), "test": list(range(n - n_test, n))}


def _planned_files(n: int, test_fraction: float) -> dict[int, dict[str, str]]:
    out = {}
    for split, ids in _split(n, test_fraction).items():
        for i in ids:
            sid = _sample_id(i)
            out[i] = {"image": f"{split}/images/{sid}.png", "label": f"{split}/labels/{sid}.png",
                      "background": f"layers/background/{sid}.png",
                      "foreground": f"layers/foreground/{sid}.png"}
    return out


def _png_bytes(array: np.ndarray) -> bytes:
    mode = {2: "L", 3: "RGB", 4: "RGBA"}[array.ndim if array.ndim == 2 else array.shape[2]]
    buf = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buf, format="PNG", compress_level=1)  # fast; ~20% larger
    return buf.getvalue()


def read_manifest(root: str | os.PathLike) -> dict | None:
    """The generator manifest of ``root``, or ``None`` if there is none (or it is unreadable)."""
    path = Path(root) / MANIFEST_NAME
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("generator") != _GENERATOR:
        return None
    return manifest


def verify(root: str | os.PathLike) -> list[str]:
    """Check a generated dataset against its manifest; returns the problems (empty if intact)."""
    root = Path(root)
    manifest = read_manifest(root)
    if manifest is None:
        return [f"{root / MANIFEST_NAME}: missing or not a synthetic-dataset manifest"]
    if not manifest.get("complete"):
        return [f"{root}: generation did not finish (manifest marked incomplete)"]
    problems = []
    for rel, digest in manifest["files"].items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{path}: missing")
        elif sha256_file(path) != digest:
            problems.append(f"{path}: content differs from the manifest (sha256 mismatch)")
    return problems


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), transient=True, console=Console(stderr=True),
                    disable=not (enabled and sys.stderr.isatty()))


def _params(n: int, seed: int, size, test_fraction: float) -> dict:
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n={n!r}: the number of samples must be a positive integer")
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed={seed!r}: must be a non-negative integer")
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction={test_fraction}: must lie in [0, 1)")
    return {"n": int(n), "seed": int(seed), "size": list(_parse_size(size)),
            "test_fraction": float(test_fraction)}


def generate(root: str | os.PathLike = DEFAULT_ROOT, n: int = 64, seed: int = 0,
             size: int | tuple[int, int] = 256, force: bool = False,
             test_fraction: float = 0.2, progress: bool = False) -> Path:
    """Write ``n`` synthetic portraits and their layers under ``root`` (HELEN* layout).

    An intact dataset generated with the same parameters is reused as is. A dataset generated with
    other parameters is replaced only with ``force=True`` (which also regenerates an intact one).
    Only files listed in this generator's manifest are ever overwritten or deleted: a file of
    someone else's at a path the dataset needs is an error, and unrelated files are left alone.

    Args:
        root: output folder (created if missing).
        n: number of portraits; the last ``round(n * test_fraction)`` form the test split.
        seed: sample ``i`` is drawn from ``(seed, i)`` only.
        size: ``S`` or ``(H, W)`` in pixels.
        force: regenerate even if the dataset exists.
        test_fraction: share of samples listed in ``test.txt``.
        progress: show a progress bar (when stderr is a terminal).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.
    """
    root = Path(root)
    params = _params(n, seed, size, test_fraction)
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"{root}: exists and is not a directory; choose another root")
    old = read_manifest(root)
    if old is not None and not force:
        same = old.get("params") == params and old.get("version") == GENERATOR_VERSION
        if same and old.get("complete") and not verify(root):
            log.info("synthetic dataset %s is up to date (%d samples)", root, n)
            return root
        if not same and old.get("complete"):
            raise FileExistsError(
                f"{root} holds a synthetic dataset generated with {old.get('params')} "
                f"(generator version {old.get('version')}); requested {params} (version "
                f"{GENERATOR_VERSION}). Pass force=True (--force) to replace it, or choose "
                "another root.")

    plan = _planned_files(params["n"], test_fraction)
    new_paths = [p for files in plan.values() for p in files.values()] + ["train.txt", "test.txt"]
    ours = set(old["files"]) if old is not None else set()
    foreign = [p for p in new_paths if (root / p).exists() and p not in ours]
    if foreign:
        raise FileExistsError(
            f"{root} already contains files the synthetic generator did not write (e.g. "
            f"{', '.join(str(root / p) for p in foreign[:3])}); refusing to overwrite them. "
            "Choose an empty or new root (e.g. data/synthetic).")

    t0 = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    # Mark everything we may leave behind as ours before touching it, so an interrupted run can
    # be resumed or replaced without mistaking our own files for a user's.
    pending = {"generator": _GENERATOR, "version": GENERATOR_VERSION, "params": params,
               "complete": False, "files": {p: None for p in sorted(ours | set(new_paths))}}
    atomic_write(root / MANIFEST_NAME, json.dumps(pending, indent=1).encode())
    for stale in sorted(ours - set(new_paths)):
        (root / stale).unlink(missing_ok=True)

    digests: dict[str, str] = {}
    with _progress_bar(progress) as bar:
        task = bar.add_task(f"synthetic portraits -> {root}", total=len(plan))
        for i, files in plan.items():
            sample = make_sample(i, params["seed"], tuple(params["size"]))
            for key, array in (("image", sample.image), ("label", sample.label),
                               ("background", sample.background),
                               ("foreground", sample.foreground)):
                data = _png_bytes(array)  # not fsynced one by one (12 ms each): os.sync below
                atomic_write(root / files[key], data, durable=False)
                digests[files[key]] = hashlib.sha256(data).hexdigest()
            bar.advance(task)
    for split, ids in _split(params["n"], test_fraction).items():
        lines = "".join(f"{plan[i]['image']} {plan[i]['label']}\n" for i in ids).encode()
        atomic_write(root / f"{split}.txt", lines)
        digests[f"{split}.txt"] = hashlib.sha256(lines).hexdigest()

    manifest = {"generator": _GENERATOR, "version": GENERATOR_VERSION, "params": params,
                "complete": True, "classes": list(CLASS_NAMES),
                "splits": {k: [_sample_id(i) for i in v]
                           for k, v in _split(params["n"], test_fraction).items()},
                "files": dict(sorted(digests.items()))}
    if hasattr(os, "sync"):
        os.sync()  # every sample on disk before the manifest says the set is complete
    atomic_write(root / MANIFEST_NAME, json.dumps(manifest, indent=1).encode())
    log.info("generated %d synthetic portraits (%dx%d) in %s in %.1f s", params["n"],
             *params["size"], root, time.perf_counter() - t0)
    return root


def ensure_synthetic(root: str | os.PathLike = DEFAULT_ROOT, n: int = 64, seed: int = 0,
                     size: int | tuple[int, int] = 256, test_fraction: float = 0.2) -> Path:
    """Return ``root`` holding exactly this synthetic dataset, generating it on first use.

    Reuses an intact dataset with the same parameters; replaces (only) our own files when the
    parameters or the generator version differ or files were damaged.
    """
    old = read_manifest(root)
    params = _params(n, seed, size, test_fraction)
    stale = old is not None and (old.get("params") != params
                                 or old.get("version") != GENERATOR_VERSION)
    return generate(root, n, seed, size, force=stale, test_fraction=test_fraction)


def read_layers(root: str | os.PathLike, sample_id: str) -> tuple[np.ndarray, np.ndarray]:
    """Load the ground-truth layers of one sample.

    Returns:
        ``background`` ``(H, W, 3)`` uint8 RGB and ``foreground`` ``(H, W, 4)`` uint8 RGBA.
    """
    root = Path(root)
    paths = [root / "layers" / kind / f"{sample_id}.png" for kind in ("background", "foreground")]
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such layer; generate the dataset with "
                                    f"`python -m portraitseg.data synth --root {root}`")
    with Image.open(paths[0]) as bg_img, Image.open(paths[1]) as fg_img:
        return np.asarray(bg_img.convert("RGB")).copy(), np.asarray(fg_img.convert("RGBA")).copy()


# --------------------------------------------------------------------------------------------
# Command line: python -m portraitseg.data synth ...


def _size_arg(text: str) -> tuple[int, int]:
    try:
        return _parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_synth_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``synth`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "synth", help="generate the synthetic portrait dataset (HELEN* layout + layers)",
        description="Generate deterministic synthetic portraits with Helen labels and their "
                    "ground-truth layers (clean background, RGBA person). An intact dataset "
                    "with the same parameters is reused.")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="output folder (%(default)s)")
    p.add_argument("--n", type=int, default=64, help="number of portraits (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    p.add_argument("--size", type=_size_arg, default=(128, 128),
                   help="S or HxW in pixels (default 128, as conf/data/synthetic.yaml)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of portraits in test.txt (%(default)s)")
    p.add_argument("--force", action="store_true",
                   help="regenerate, replacing a dataset made with other parameters")
    p.set_defaults(func=run_synth)
    return p


def run_synth(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; returns the process exit code."""
    t0 = time.perf_counter()
    try:
        root = generate(args.root, n=args.n, seed=args.seed, size=args.size, force=args.force,
                        test_fraction=args.test_fraction, progress=True)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # ours name the root; the system's (read-only, not a folder) get it here
        text = f"--root {args.root}: cannot be written ({err.strerror})" if err.strerror else str(err)
        print(f"error: {text}", file=sys.stderr)
        return 2
    manifest = read_manifest(root) or {}
    splits = manifest.get("splits", {})
    h, w = manifest.get("params", {}).get("size", args.size)
    print(f"{root}: {len(splits.get('train', []))} train + {len(splits.get('test', []))} test "
          f"portraits, {h}x{w} px, seed {args.seed} ({time.perf_counter() - t0:.1f} s)")
    return 0
