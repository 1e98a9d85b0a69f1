"""Faces measured in a Helen face parse (:class:`Face`, :func:`find_faces`) and the torso prior
that hangs below each of them (:func:`torso_prior`), on the working grid of
:func:`portraitseg.subject.grabcut.person_alpha`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from portraitseg.classes import CLASS_NAMES, SUBJECT_CLASSES
from portraitseg.render.options import PERSON_DEFAULTS

#: Face core (skin and facial features) and facial features of the Helen parse.
HAIR = CLASS_NAMES.index("hair")
FACE_CORE: tuple[int, ...] = tuple(c for c in SUBJECT_CLASSES if c != HAIR)
FEATURES: tuple[int, ...] = tuple(c for c in FACE_CORE if CLASS_NAMES[c] != "skin")
#: The smallest face height, in working pixels, that gets a body, whatever ``min_face`` says.
MIN_FACE_PX = 6
#: Height / width of a face (skin region) used to size faces cut by the image border.
FACE_ASPECT = 1.3
#: Largest face tilt (degrees) trusted for the body direction; beyond it the body hangs straight down.
MAX_TILT_DEG = 40.0
#: How fast the torso prior (probable person) and the region the person may occupy widen downwards.
BODY_SLOPE, REGION_SLOPE = 0.4, 1.0


@dataclass(frozen=True)
class Face:
    """Geometry of one connected face region, in working-grid pixels.

    Attributes:
        box: ``(x0, y0, x1, y1)`` bounding box (exclusive end).
        centroid: ``(x, y)`` mean of the face pixels.
        chin: ``(x, y)`` the lowest point of the face along its axis (the body hangs from it).
        tilt: rotation in radians from the image's down direction to the face's chin-ward axis,
            clockwise on screen (the chin is left of the forehead when > 0); 0 when unreliable.
        size: face half-height in pixels (from its visible extent, robust to border cuts).
        area: number of face pixels.
        cut: whether the face touches the image border.
    """

    box: tuple[int, int, int, int]
    centroid: tuple[float, float]
    chin: tuple[float, float]
    tilt: float
    size: float
    area: int
    cut: bool


def face_geometry(component: np.ndarray, features: np.ndarray | None = None) -> Face:
    """Measure a face from its ``(h, w)`` boolean mask (one connected region).

    The face axis is the principal axis of the pixel coordinates (second moments), oriented
    downwards; when the region is nearly round it is the direction from the eyes/brows to the
    mouth if ``features`` (``(h, w)`` int class ids of the parse) shows both, else vertical.
    Tilts beyond ``MAX_TILT_DEG`` are not trusted (faces cut by the border, lying people) and
    replaced by 0. The size (half-height) is the larger of the visible extent along the axis and
    ``FACE_ASPECT`` x the extent across it (robust percentiles), so a face cut by a side or the
    top border keeps its size; the chin is the lowest part of the face along the axis.
    """
    ys, xs = np.nonzero(component)
    if len(xs) == 0:
        raise ValueError("face_geometry needs a non-empty face mask")
    h, w = component.shape
    pts = np.stack([xs, ys], 1).astype(np.float64) + 0.5
    centre = pts.mean(0)
    d = pts - centre
    cov = d.T @ d / len(pts)
    evals, evecs = np.linalg.eigh(cov)  # ascending
    down = evecs[:, 1]
    if evals[1] < 1.15 * evals[0]:  # nearly round: the moments do not give an axis
        down = np.array([0.0, 1.0])
        if features is not None:
            upper = np.isin(features, [c for c in FEATURES if CLASS_NAMES[c].endswith(("brow", "eye"))])
            lower = np.isin(features, [c for c in FEATURES if CLASS_NAMES[c].endswith(("lip", "mouth"))])
            upper, lower = upper & component, lower & component
            if upper.any() and lower.any():
                uy, ux = np.nonzero(upper)
                ly, lx = np.nonzero(lower)
                v = np.array([lx.mean() - ux.mean(), ly.mean() - uy.mean()])
                if np.hypot(*v) > 0:
                    down = v / np.hypot(*v)
    if down[1] < 0:
        down = -down
    tilt = math.atan2(-down[0], down[1])  # 0 = upright; > 0 = face axis rotated clockwise
    if abs(math.degrees(tilt)) > MAX_TILT_DEG:
        tilt, down = 0.0, np.array([0.0, 1.0])
    right = np.array([down[1], -down[0]])
    along, across = d @ down, d @ right
    lo, hi = np.percentile(along, [0.5, 99.5])
    left, rgt = np.percentile(across, [0.5, 99.5])
    size = max(float(hi - lo) / 2, FACE_ASPECT * float(rgt - left) / 2, 0.5)
    low = along >= hi - 0.15 * (hi - lo)  # the bottom 15 % of the face: the chin
    chin = centre + hi * down + float(np.median(across[low])) * right
    y0, x0 = int(ys.min()), int(xs.min())
    y1, x1 = int(ys.max()) + 1, int(xs.max()) + 1
    return Face(box=(x0, y0, x1, y1), centroid=(float(centre[0]), float(centre[1])),
                chin=(float(chin[0]), float(chin[1])), tilt=float(tilt), size=size, area=len(xs),
                cut=x0 == 0 or y0 == 0 or x1 == w or y1 == h)


def find_faces(labels: np.ndarray,
               min_face: float = PERSON_DEFAULTS["min_face"]) -> tuple[list[Face], list[Face]]:
    """Faces in a Helen label map ``(h, w)``: ``(faces, too_small)``.

    A face is a connected region (8-connectivity) of skin + facial-feature pixels that contains
    facial features (brows, eyes, nose, lips or mouth) or touches hair, so skin-coloured arms
    or hands predicted as skin do not grow bodies, while a parse whose small features were lost
    (a weak model, a low resolution) still finds its faces. Faces shorter than
    ``max(min_face * min(h, w), MIN_FACE_PX)`` are returned in ``too_small``; regions of that
    size without features are ignored (specks of skin in the hair).
    """
    core = np.isin(labels, FACE_CORE)
    if not core.any():
        return [], []
    count, comp = cv2.connectedComponents(core.astype(np.uint8), connectivity=8)
    has_feature = np.zeros(count, bool)
    has_feature[np.unique(comp[np.isin(labels, FEATURES)])] = True
    near_hair = np.zeros(count, bool)
    hair = cv2.dilate((labels == HAIR).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    near_hair[np.unique(comp[hair])] = True
    limit = max(min_face * min(labels.shape), MIN_FACE_PX)
    faces, small = [], []
    for i in range(1, count):
        if not (has_feature[i] or near_hair[i]):
            continue
        face = face_geometry(comp == i, labels)
        if 2 * face.size >= limit:
            faces.append(face)
        elif has_feature[i]:
            small.append(face)
    return faces, small


def _frame_points(origin: tuple[float, float], tilt: float, uv: Sequence[tuple[float, float]]) -> np.ndarray:
    """Points ``(u, v)`` of a frame rotated by ``tilt`` at ``origin`` -> int32 image ``(x, y)``."""
    c, s = math.cos(tilt), math.sin(tilt)
    pts = [(origin[0] + c * u - s * v, origin[1] + s * u + c * v) for u, v in uv]
    return np.round(np.asarray(pts)).astype(np.int32)


def torso_prior(faces: Sequence[Face], shape: tuple[int, int], *,
                shoulder_width: float = PERSON_DEFAULTS["shoulder_width"],
                margin: float = PERSON_DEFAULTS["margin"]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Body priors below faces on an ``(h, w)`` grid: ``(neck, body, region)`` boolean masks.

    For a face of half-height ``s`` and half-width ``a = s / FACE_ASPECT`` hanging from its chin:
    ``neck`` is what is almost surely the person whatever they wear: a strip under the chin
    (``0.25 a`` each side, ``0.6 s`` down) and a chest column (``0.8 a`` each side, from ``0.9 s``
    to ``2.5 s`` below the chin); ``body`` is the neck (``0.55 a``) continued by shoulders sloping
    out to ``shoulder_width * a`` and sides widening downwards (``BODY_SLOPE``) to the image
    bottom, the neck following the face tilt and the body half of it; ``region`` is where the
    person may be at all: the body widened by ``margin * a`` (sides widening by ``REGION_SLOPE``)
    plus the face box grown by ``0.6 s``.
    Everything is clipped to the grid.
    """
    h, w = shape
    neck = np.zeros((h, w), np.uint8)
    body = np.zeros((h, w), np.uint8)
    region = np.zeros((h, w), np.uint8)
    far = 4.0 * (h + w)  # "to the image bottom": far enough for any face position
    for f in faces:
        s = f.size
        a = s / FACE_ASPECT
        rect = lambda half, v0, v1: [(-half, v0), (half, v0), (half, v1), (-half, v1)]  # noqa: E731
        cv2.fillPoly(neck, [_frame_points(f.chin, f.tilt, rect(0.25 * a, -0.1 * s, 0.6 * s))], 1)
        cv2.fillPoly(neck, [_frame_points(f.chin, 0.5 * f.tilt, rect(0.8 * a, 0.9 * s, 2.5 * s))], 1)
        cv2.fillPoly(body, [_frame_points(f.chin, f.tilt, rect(0.55 * a, -0.3 * s, 0.5 * s))], 1)
        sw = shoulder_width * a
        for extra, slope, target in ((0.0, BODY_SLOPE, body), (margin * a, REGION_SLOPE, region)):
            half = sw + extra
            outline = [(-0.6 * a - extra, 0.25 * s - extra), (0.6 * a + extra, 0.25 * s - extra),
                       (0.55 * half, 0.38 * s - extra), (0.85 * half, 0.55 * s - extra),
                       (half, 0.8 * s), (half + slope * far, 0.8 * s + far),
                       (-half - slope * far, 0.8 * s + far), (-half, 0.8 * s),
                       (-0.85 * half, 0.55 * s - extra), (-0.55 * half, 0.38 * s - extra)]
            cv2.fillPoly(target, [_frame_points(f.chin, 0.5 * f.tilt, outline)], 1)
        x0, y0, x1, y1 = f.box
        g = 0.6 * s
        region[max(0, int(y0 - g)):int(y1 + g) + 1, max(0, int(x0 - g)):int(x1 + g) + 1] = 1
    region |= body
    return neck.astype(bool), body.astype(bool), region.astype(bool)
