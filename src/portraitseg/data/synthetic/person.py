"""The person of a synthetic portrait (face, hair, neck, shoulders, clothes) as a stack of
antialiased layers, each with its Helen classes (:func:`draw_person`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from portraitseg.classes import CLASS_NAMES
from portraitseg.data.synthetic.scene import Canvas
from portraitseg.data.synthetic.shapes import (
    below,
    circle,
    cov,
    ellipse,
    hsv,
    rotate,
    square_wave,
    value_noise,
)

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
_SCLERA = np.array([232, 226, 218], np.float32)


class _Frame:
    """A rotated frame: ``u`` along the rotated x axis, ``v`` along the rotated y axis (down)."""

    def __init__(self, cx: float, cy: float, angle: float) -> None:
        self.cx, self.cy = float(cx), float(cy)
        self.c, self.s = float(np.cos(angle)), float(np.sin(angle))

    def to_image(self, u: float, v: float) -> tuple[float, float]:
        return self.cx + self.c * u - self.s * v, self.cy + self.s * u + self.c * v

    def window(self, cv: Canvas, u: float, v: float, r: float):
        return cv.window(*self.to_image(u, v), r)

    def coords(self, cv: Canvas, sl) -> tuple[np.ndarray, np.ndarray]:
        dx, dy = cv.xx[sl] - self.cx, cv.yy[sl] - self.cy
        return self.c * dx + self.s * dy, -self.s * dx + self.c * dy


@dataclass
class Layer:
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


_Window = tuple[slice, slice]


@dataclass
class _Look:
    """The measures, colours and lighting of one person, shared by all its layers."""

    s: int  # short side of the canvas
    a: float  # face half-width
    b: float  # face half-height
    tilt: float
    face: _Frame  # u right, v down, pixels, origin at the face centre
    yaw: float  # features shifted sideways: a hint of head turn
    skin: np.ndarray
    hair_c: np.ndarray
    light: tuple[float, float, float]  # unit vector towards the light
    exposure: float
    blush_amount: float
    skin_noise: np.ndarray

    def skin_at(self, sl: _Window, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Skin colour lit as an ellipsoid, with texture and cheek blush; and the shading."""
        a, b = self.a, self.b
        lx, ly, lz = self.light
        nx, ny = np.clip(u / a, -1, 1), np.clip(v / b, -1, 1)
        nz = np.sqrt(np.clip(1 - nx * nx - ny * ny, 0, 1))
        lambert = np.clip(nx * lx + ny * ly + nz * lz, 0, 1)
        shading = (0.58 + 0.47 * lambert) * self.exposure * (1 + 0.03 * self.skin_noise[sl])
        blush = self.blush_amount * (
            np.exp(-((u + 0.55 * a) ** 2 + (v - 0.25 * b) ** 2) / (0.3 * a) ** 2)
            + np.exp(-((u - 0.55 * a) ** 2 + (v - 0.25 * b) ** 2) / (0.3 * a) ** 2))
        tint = 1 + blush[..., None] * np.array([0.3, -0.25, -0.25], np.float32)
        return self.skin * shading[..., None] * tint, shading


def _draw_look(rng: np.random.Generator, cv: Canvas) -> _Look:
    """Draw the face's size, place and tilt, the skin and hair colours and the lighting."""
    h, w = cv.h, cv.w
    s = min(h, w)
    a = rng.uniform(0.16, 0.24) * s
    b = a * rng.uniform(1.22, 1.42)
    cx = w / 2 + rng.uniform(-0.13, 0.13) * w
    cy = h * rng.uniform(0.34, 0.48)
    tilt = float(np.deg2rad(rng.uniform(-14, 14)))
    face = _Frame(cx, cy, tilt)
    yaw = rng.uniform(-0.08, 0.08) * a

    skin = np.clip(_SKIN_TONES[rng.integers(len(_SKIN_TONES))] + rng.uniform(-10, 10, 3), 0, 255)
    skin = skin.astype(np.float32)
    hair_c = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_WEIGHTS)]
    hair_c = np.clip(hair_c * rng.uniform(0.85, 1.15) + rng.uniform(-6, 6, 3), 0, 255)
    hair_c = hair_c.astype(np.float32)
    lx, ly, lz = rng.uniform(-0.7, 0.7), rng.uniform(-0.7, 0.1), 1.0
    norm = float(np.sqrt(lx * lx + ly * ly + lz * lz))
    light = (lx / norm, ly / norm, lz / norm)
    exposure = rng.uniform(0.85, 1.1)
    blush_amount = rng.uniform(0, 0.12)
    skin_noise = value_noise(rng, (h, w), 24)
    return _Look(s, a, b, tilt, face, yaw, skin, hair_c, light, exposure, blush_amount, skin_noise)


def _cloth_pattern(pattern: int, tu: np.ndarray, tv: np.ndarray, p_size: float,
                   p_skew: float) -> np.ndarray:
    """Share of the second cloth colour: plain (0), stripes (1), checks (2) or dots (3)."""
    if pattern == 1:
        return square_wave(tv + p_skew * tu, p_size)
    if pattern == 2:
        return np.abs(square_wave(tu, p_size) - square_wave(tv, p_size))
    if pattern == 3:
        return cov(circle((tu % p_size) - p_size / 2, (tv % p_size) - p_size / 2, p_size * 0.2))
    return np.zeros_like(tu)


def _draw_clothes(rng: np.random.Generator, cv: Canvas, look: _Look) -> tuple[_Frame, Layer | None]:
    """Clothes: shoulders widening downwards, in a frame (returned) that follows part of the tilt."""
    h, w, a, b = cv.h, cv.w, look.a, look.b
    neck_x, neck_y = look.face.to_image(0.0, 1.3 * b)
    sh_y = neck_y + b * rng.uniform(-0.05, 0.2)
    sw = a * rng.uniform(1.7, 2.6)
    drop = b * rng.uniform(0.2, 0.45)
    torso = _Frame(neck_x, sh_y, 0.3 * look.tilt)
    cloth = hsv(rng.random(), rng.uniform(0.1, 0.9), rng.uniform(0.15, 0.9))
    cloth2 = hsv(rng.random(), rng.uniform(0, 0.9), rng.uniform(0.2, 1.0))
    pattern, p_size, p_skew = rng.integers(4), rng.uniform(0.04, 0.11) * look.s, rng.uniform(-0.2, 0.2)
    folds = 1 + 0.12 * value_noise(rng, (h, w), 6)
    y0 = max(0, int(sh_y - 0.2 * sw - 2))
    if y0 >= h:
        return torso, None
    sl = (slice(y0, h), slice(0, w))
    tu, tv = torso.coords(cv, sl)
    top = below(tu, tv, lambda x: drop * np.minimum((x / sw) ** 2, 1.5),
                lambda x: np.where((x / sw) ** 2 < 1.5, 2 * drop * x / sw**2, 0.0))
    side = np.abs(tu) - (sw * 1.08 + 0.35 * np.maximum(tv, 0))
    body = cov(np.maximum(top, side))
    m = _cloth_pattern(pattern, tu, tv, p_size, p_skew)
    shade = np.clip(1.0 - 0.25 * np.abs(tu) / (sw * 1.5), 0.6, 1.0) * folds[sl] * look.exposure
    cloth_rgb = (cloth * (1 - m[..., None]) + cloth2 * m[..., None]) * shade[..., None]
    return torso, Layer(sl, body, cloth_rgb, [(0, 1.0)])


def _hair_outline(rng: np.random.Generator, s: int, hrx: float, hry_top: float,
                  hry_bot: float) -> tuple[np.ndarray, np.ndarray]:
    """The hair's wobbly outline radius and its strand pattern, tabulated over the angle."""
    table = np.linspace(-np.pi, np.pi, 2048, endpoint=False)
    ry = np.where(np.sin(table) < 0, hry_top, hry_bot)
    outline = 1.0 / np.sqrt((np.cos(table) / hrx) ** 2 + (np.sin(table) / ry) ** 2)
    for k in range(2, 8):
        outline *= 1 + rng.uniform(0, 0.05) / k * np.sin(k * table + rng.uniform(0, 2 * np.pi))
    for k in rng.integers(30, 120, 5):
        outline += rng.uniform(0.001, 0.004) * s * np.sin(k * table + rng.uniform(0, 2 * np.pi))
    strands = (0.5 + 0.5 * np.sin(rng.integers(40, 90) * table + rng.uniform(0, 2 * np.pi))) * \
              (0.5 + 0.5 * np.sin(rng.integers(90, 160) * table + rng.uniform(0, 2 * np.pi)))
    return outline.astype(np.float32), strands.astype(np.float32)


def _draw_hair(rng: np.random.Generator, cv: Canvas, look: _Look) -> tuple[bool, Layer | None]:
    """Whether the person is bald, and the hair layer (none when bald or off the canvas)."""
    # An ellipse around the head (long hair reaches the shoulders) whose outline wobbles and breaks
    # into strands; its alpha is soft and stringy near the outline.
    a, b, s = look.a, look.b, look.s
    bald = rng.random() < 0.06
    hair_v = -b * rng.uniform(0.05, 0.2)
    hrx = a * rng.uniform(1.08, 1.35)
    hry_top = b * rng.uniform(1.0, 1.22)
    hry_bot = b * (rng.uniform(1.2, 2.6) if rng.random() < 0.35 else rng.uniform(0.3, 0.7))
    outline, strands = _hair_outline(rng, s, hrx, hry_top, hry_bot)
    soft = max(1.0, 0.02 * s)
    flow_k, sheen_at, sheen = rng.integers(60, 140), rng.uniform(0.55, 0.8), rng.uniform(15, 45)
    flow_noise = value_noise(rng, (cv.h, cv.w), 8)
    hair_win = look.face.window(cv, 0.0, hair_v, float(outline.max()) + 3 * soft)
    if bald or hair_win is None:
        return bald, None
    hu, hv = look.face.coords(cv, hair_win)
    hv = hv - hair_v
    rho = np.sqrt(hu * hu + hv * hv)
    phi = np.arctan2(hv, hu)
    radius = _periodic(outline, phi)
    hair_sd = rho - radius
    band = np.clip((hair_sd + 3 * soft) / (3 * soft), 0, 1)  # 0 inside, 1 at the outline
    hair_alpha = cov(hair_sd, soft) * (1 - 0.65 * band * _periodic(strands, phi))
    flow = np.sin(flow_k * phi + 3 * flow_noise[hair_win])
    gloss = np.exp(-((rho / np.maximum(radius, 1) - sheen_at) / 0.1) ** 2) * sheen
    hair_rgb = look.hair_c * (0.78 + 0.16 * flow)[..., None] * look.exposure + gloss[..., None]
    return bald, Layer(hair_win, hair_alpha, hair_rgb, [(_HAIR, 1.0)])


def _draw_neck(rng: np.random.Generator, cv: Canvas, look: _Look, torso: _Frame) -> Layer | None:
    """Neck, continued by a V or round neckline into the clothes: skin, shadowed under the chin."""
    a, b = look.a, look.b
    nw = a * rng.uniform(0.42, 0.56)
    vdepth, vslope = rng.uniform(0.15, 0.55) * b, rng.uniform(0.7, 1.5)
    scoop = rng.uniform(0.08, 0.3) * b  # depth of a round neckline
    sl = look.face.window(cv, 0.0, 1.2 * b, 1.1 * b)
    if sl is None:
        return None
    u, v = look.face.coords(cv, sl)
    tu, tv = torso.coords(cv, sl)
    neckline = (lambda x: scoop * (1 - (x / (1.3 * nw)) ** 2),
                lambda x: -2 * scoop * x / (1.3 * nw) ** 2)
    neck_sd = np.maximum(np.abs(u) - nw * (1 + 0.15 * np.clip(v / b - 0.8, 0, 2)),
                         np.maximum(0.3 * b - v, -below(tu, tv, *neckline)))
    vneck = np.maximum(np.maximum(vslope * np.abs(tu) + tv - vdepth, np.abs(tu) - nw), -tv)
    neck = cov(np.minimum(neck_sd, vneck))
    chin_shadow = 0.62 + 0.38 * np.clip((v - 0.9 * b) / (0.45 * b), 0, 1)
    return Layer(sl, neck, look.skin * (0.88 * look.exposure * chin_shadow)[..., None], [(0, 1.0)])


def _draw_face(rng: np.random.Generator, cv: Canvas, look: _Look) -> Layer | None:
    """Face: an egg (narrower jaw)."""
    taper = rng.uniform(0.1, 0.28)
    sl = look.face.window(cv, 0.0, 0.0, look.b + 2)
    if sl is None:
        return None
    u, v = look.face.coords(cv, sl)
    fu = u / (1 - taper * np.clip(v / look.b, 0, 1) ** 2)
    return Layer(sl, cov(ellipse(fu, v, look.a, look.b)), look.skin_at(sl, u, v)[0], [(_SKIN, 1.0)])


@dataclass
class _Eyes:
    """Where the brows and eyes sit and how they look, in face coordinates."""

    eye_v: float
    eye_du: float
    eye_rx: float
    eye_ry: float
    brow_v: float
    brow_rx: float
    brow_ry: float
    brow_arch: float
    brow_c: np.ndarray
    gaze_u: float
    gaze_v: float
    iris_c: np.ndarray
    iris_r: float


def _draw_eye_shape(rng: np.random.Generator, look: _Look, bald: bool) -> _Eyes:
    """Draw the placement, size and colours of the brows and eyes."""
    a, b = look.a, look.b
    eye_v = b * rng.uniform(-0.16, -0.02)
    eye_du = a * rng.uniform(0.36, 0.46)
    eye_rx = a * rng.uniform(0.17, 0.23)
    eye_ry = eye_rx * rng.uniform(0.38, 0.55)
    brow_v = eye_v - b * rng.uniform(0.16, 0.24)
    brow_rx = a * rng.uniform(0.24, 0.33)
    brow_ry = max(0.9, b * rng.uniform(0.03, 0.06))
    brow_arch = brow_ry * rng.uniform(0.5, 2.5)
    brow_c = look.hair_c * rng.uniform(0.6, 0.9) if not bald else look.skin * 0.45
    gaze_u, gaze_v = rng.uniform(-0.35, 0.35) * eye_rx, rng.uniform(-0.15, 0.15) * eye_ry
    iris_c = _IRIS_COLOURS[rng.integers(len(_IRIS_COLOURS))]
    iris_r = eye_ry * rng.uniform(0.85, 1.05)
    return _Eyes(eye_v, eye_du, eye_rx, eye_ry, brow_v, brow_rx, brow_ry, brow_arch, brow_c,
                 gaze_u, gaze_v, iris_c, iris_r)


def _brow_layer(cv: Canvas, look: _Look, e: _Eyes, side: int, bx: float, turn: float,
                cls: int) -> Layer | None:
    """Brow: an arched band, thicker at the inner end."""
    sl = look.face.window(cv, bx, e.brow_v, 1.3 * e.brow_rx + e.brow_arch + 2)
    if sl is None:
        return None
    u, v = look.face.coords(cv, sl)
    bu, bv = rotate(u - bx, v - e.brow_v, turn)
    inner = np.clip(1 - 0.35 * side * bu / e.brow_rx, 0.55, 1.4)
    bv = (bv + e.brow_arch * (1 - (bu / e.brow_rx) ** 2)) / inner
    grain = 1 + 0.15 * np.sin(1.3 * bu + 0.7 * side * bv)
    return Layer(sl, cov(ellipse(bu, bv, e.brow_rx, e.brow_ry)),
                 e.brow_c * (grain * look.exposure)[..., None], [(cls, 1.0)])


def _eye_layer(cv: Canvas, look: _Look, e: _Eyes, ex: float, cls: int) -> Layer | None:
    """Eye: a lens of two circles; sclera, iris, pupil and the dark line of the upper lid."""
    sl = look.face.window(cv, ex, e.eye_v, e.eye_rx + 2)
    if sl is None:
        return None
    u, v = look.face.coords(cv, sl)
    eye_rx, eye_ry, iris_r = e.eye_rx, e.eye_ry, e.iris_r
    rc = (eye_rx**2 + eye_ry**2) / (2 * eye_ry)
    eu, ev = u - ex, v - e.eye_v
    upper = circle(eu, ev - (rc - eye_ry), rc)  # its boundary is the upper lid
    lower = circle(eu, ev + (rc - eye_ry), rc)
    iu, iv = eu - e.gaze_u, ev - e.gaze_v
    iris = cov(circle(iu, iv, iris_r))[..., None]
    pupil = cov(circle(iu, iv, iris_r * 0.45))[..., None]
    lid = np.clip(1.0 + upper / max(1.0, 0.3 * eye_ry), 0, 1)[..., None]
    col = _SCLERA * (1 - 0.25 * np.minimum((eu / eye_rx) ** 2, 1))[..., None]
    iris_shade = (0.8 + 0.4 * np.clip(-iv / iris_r, 0, 1))[..., None]
    col = col * (1 - iris) + e.iris_c * iris_shade * iris
    col = col * (1 - pupil) + 12 * pupil
    col = col * (1 - lid) + look.skin * 0.2 * lid
    return Layer(sl, cov(np.maximum(upper, lower)), col * look.exposure, [(cls, 1.0)])


def _draw_eyes(rng: np.random.Generator, cv: Canvas, look: _Look,
               bald: bool) -> tuple[float, list[Layer]]:
    """The eyes' height and the brow and eye layers; the first of each pair is the viewer's left."""
    e = _draw_eye_shape(rng, look, bald)
    layers: list[Layer] = []
    for side, cls_brow, cls_eye in ((-1, _BROW[0], _EYE[0]), (1, _BROW[1], _EYE[1])):
        ex = side * e.eye_du + look.yaw
        bx, turn = ex + side * 0.05 * look.a, side * rng.uniform(0, 0.15)
        layers += [layer for layer in (_brow_layer(cv, look, e, side, bx, turn, cls_brow),
                                       _eye_layer(cv, look, e, ex, cls_eye)) if layer is not None]
    return e.eye_v, layers


def _draw_nose(rng: np.random.Generator, cv: Canvas, look: _Look, eye_v: float) -> Layer | None:
    """Nose: a narrow bridge between the eyes widening to a rounded base with nostrils."""
    a, b = look.a, look.b
    nose_top = eye_v - 0.04 * b
    nose_bot = b * rng.uniform(0.3, 0.4)
    top_w, bot_w = a * 0.07, a * rng.uniform(0.18, 0.26)
    nose_u = look.yaw * 1.3
    sl = look.face.window(cv, nose_u, (nose_top + nose_bot) / 2,
                          (nose_bot - nose_top) / 2 + bot_w + 2)
    if sl is None:
        return None
    u, v = look.face.coords(cv, sl)
    nu = u - nose_u
    slope = (bot_w - top_w) / (nose_bot - nose_top)
    wedge = np.maximum(
        (np.abs(nu) - (top_w + slope * (v - nose_top))) / np.sqrt(1 + slope**2),
        np.maximum(nose_top - v, v - nose_bot + 0.1 * b))
    ball = ellipse(nu, v - (nose_bot - 0.08 * b), bot_w * 1.05, 0.1 * b)
    away = np.clip(-nu * np.sign(look.light[0]) / bot_w, 0, 1)  # the side turned away from the light
    tip = np.exp(-((nu / (0.4 * bot_w)) ** 2 + ((v - nose_bot + 0.1 * b) / (0.06 * b)) ** 2))
    nostrils = sum(cov(ellipse(nu - k * 0.5 * bot_w, v - (nose_bot - 0.03 * b),
                                 0.22 * bot_w, 0.025 * b + 0.4)) for k in (-1, 1))
    shade = (1 - 0.2 * away + 0.12 * tip) * (1 - 0.7 * nostrils)
    return Layer(sl, cov(np.minimum(wedge, ball)), look.skin_at(sl, u, v)[0] * shade[..., None],
                 [(_NOSE, 1.0)])


def _lip_curve(mu: np.ndarray, mw: float, smile: float, c: float,
               dip: float = 0.0) -> tuple[Callable, Callable]:
    """``y = f(x)`` through both mouth corners, ``c`` at the centre; and ``f'``."""
    prof = np.clip(1 - (mu / mw) ** 2, 0, 1)
    dprof = np.where(np.abs(mu) < mw, -2 * mu / mw**2, 0.0)
    notch = 1 - dip * np.exp(-(mu / (0.18 * mw)) ** 2)
    return (lambda x: -smile * (x / mw) ** 2 + c * prof * notch,
            lambda x: -2 * smile * x / mw**2 + c * dprof)


def _draw_mouth(rng: np.random.Generator, cv: Canvas, look: _Look) -> Layer | None:
    """Mouth: one layer (no seams between its parts) split into upper lip, inner mouth, lower lip."""
    a, b = look.a, look.b
    mv = b * rng.uniform(0.52, 0.62)
    mw = a * rng.uniform(0.3, 0.44)
    ut, lt = b * rng.uniform(0.05, 0.09), b * rng.uniform(0.07, 0.12)
    is_open = rng.random() < 0.4
    oh = b * (rng.uniform(0.06, 0.16) if is_open else rng.uniform(0.01, 0.025))
    smile = b * rng.uniform(-0.03, 0.08)
    bow = rng.uniform(0.0, 0.35)
    lip_c = look.skin * np.array([0.82, 0.52, 0.52], np.float32) + np.array([40, 0, 8], np.float32)
    if rng.random() < 0.2:  # lipstick
        lip_c = hsv(rng.uniform(0.9, 1.0), rng.uniform(0.5, 0.9), rng.uniform(0.45, 0.85))
    has_teeth = is_open and rng.random() < 0.7
    mouth_u = look.yaw * 1.2
    sl = look.face.window(cv, mouth_u, mv, mw + ut + lt + oh + abs(smile) + 2)
    if sl is None:
        return None
    u, v = look.face.coords(cv, sl)
    mu, my = u - mouth_u, v - mv
    top, bottom = _lip_curve(mu, mw, smile, -(ut + oh / 2), bow), _lip_curve(mu, mw, smile, oh / 2 + lt)
    open_top, open_bottom = _lip_curve(mu, mw, smile, -oh / 2), _lip_curve(mu, mw, smile, oh / 2)
    outer = np.maximum(np.maximum(below(mu, my, *top), -below(mu, my, *bottom)), np.abs(mu) - mw)
    in_upper = cov(-below(mu, my, *open_top))  # above the opening's top edge
    in_lower = cov(below(mu, my, *open_bottom))  # below its bottom edge
    inner = np.clip(1 - in_upper - in_lower, 0, 1)
    teeth = cov(my - (open_top[0](mu) + 0.45 * oh)) * float(has_teeth)
    inner_c = np.array([70, 18, 24], np.float32) * (1 - teeth[..., None]) + \
        np.array([225, 220, 205], np.float32) * teeth[..., None]
    gloss = 1.05 + 0.2 * np.exp(-((my - oh / 2 - lt / 2) / lt) ** 2)
    shading = look.skin_at(sl, u, v)[1][..., None]
    rgb = (lip_c * 0.88 * in_upper[..., None] + inner_c * inner[..., None]
           + lip_c * (gloss * in_lower)[..., None]) * shading
    total = np.maximum(in_upper + inner + in_lower, 1e-6)
    return Layer(sl, cov(outer), rgb, [(_UPPER_LIP, in_upper / total), (_INNER_MOUTH, inner / total),
                                       (_LOWER_LIP, in_lower / total)])


def _draw_fringe(rng: np.random.Generator, cv: Canvas, look: _Look, hair: Layer | None) -> Layer | None:
    """Fringe: the hair above a wavy hairline, drawn again over the face."""
    a, b, s = look.a, look.b, look.s
    h0 = rng.uniform(0.25, 0.4) if rng.random() < 0.15 else rng.uniform(0.45, 0.72)
    h1, part = rng.uniform(0.3, 0.65), rng.uniform(-0.15, 0.15)
    k1, k2, ph1, ph2 = rng.uniform(0.3, 0.6), rng.uniform(1.5, 3.0), *rng.uniform(0, 6.3, 2)
    amp = 0.02 * s
    if hair is None:
        return None
    u, v = look.face.coords(cv, hair.window)
    line = (lambda x: b * (-h0 + h1 * (x / a) ** 2 + part * x / a)
            + amp * (0.3 * np.sin(k1 * x + ph1) + 0.15 * np.sin(k2 * x + ph2)),
            lambda x: b * (2 * h1 * x / a**2 + part / a)
            + amp * (0.3 * k1 * np.cos(k1 * x + ph1) + 0.15 * k2 * np.cos(k2 * x + ph2)))
    front = cov(-below(u, v, *line), max(1.0, 0.012 * s))
    return Layer(hair.window, hair.alpha * front, hair.colour, [(_HAIR, 1.0)])


def draw_person(rng: np.random.Generator, cv: Canvas) -> list[Layer]:
    """The person as layers, back to front."""
    look = _draw_look(rng, cv)
    torso, clothes = _draw_clothes(rng, cv, look)
    bald, hair = _draw_hair(rng, cv, look)
    neck = _draw_neck(rng, cv, look, torso)
    face = _draw_face(rng, cv, look)
    eye_v, eyes = _draw_eyes(rng, cv, look, bald)
    nose = _draw_nose(rng, cv, look, eye_v)
    mouth = _draw_mouth(rng, cv, look)
    fringe = _draw_fringe(rng, cv, look, hair)
    return [layer for layer in (clothes, hair, neck, face, *eyes, nose, mouth, fringe) if layer is not None]
