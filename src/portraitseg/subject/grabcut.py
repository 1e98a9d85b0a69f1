"""Whole-person subject: extend a face parse to the head, neck, shoulders and torso.

Helen labels (and models trained on them) cover the face and hair only, so a portrait rendered
from a face parse keeps a sharp floating head over a blurred body. :func:`person_alpha` extends the
subject classically, with no extra training data:

1. The photo and the face parse are resized to a small *working* grid (``work_size`` pixels on
   the long side, independent of the photo size, so a 12 MP photo costs what a 0.05 MP one does).
2. Every connected face region (skin and facial features; it must show features or touch hair)
   gives a face geometry (:class:`Face`:
   box, tilt from the principal axis of its pixels, size, chin), robust to faces cut by the image
   border (the size comes from the larger of height and 1.3 x width; the chin is the lowest part).
   Faces below ``min_face`` keep only their face mask.
3. A torso prior hangs below each face: a neck, then shoulders widening downwards, scaled by the
   face size, following part of its tilt, clipped to the image (:func:`torso_prior`).
4. OpenCV GrabCut (colour GMMs + a graph cut) segments the working image seeded with the parsed
   face and hair (plus a strip under the chin and a chest column) as sure foreground, the torso
   prior as probable foreground, a margin around it as probable background and everything far
   from any person as sure background. Foreground regions not connected to a face are dropped.
5. Selective blurring still applies inside the person: ``alpha = max(person, P(kept classes)) *
   (1 - P(face classes not kept))``, so e.g. ``keep=hair`` blurs the face even inside the person.

Steps 2 and 3 live in :mod:`portraitseg.subject.torso` (their names are importable from here too).

The result is an alpha at the working resolution; the renderer upsamples it and snaps it to the
photo's edges with its guided filter (:func:`portraitseg.render.render_portrait`, ``refine``).

This is a **non-differentiable preprocessing step** (NumPy/OpenCV on the CPU; tensors are detached).
The renderer stays differentiable with respect to the alpha it is given; to train through the
render, pass alphas/probabilities directly (``subject=face``) as :mod:`portraitseg.render.loss` does.

Failures never raise: no face found leaves the photo sharp (no blur), faces too small for a body
estimate (or a failed graph cut) fall back to the face-parse mask, each with a warning string
returned to the caller (the CLI prints them per file).

Users with person masks can train a 2-class person segmenter instead (``python train.py
experiment=person data.root=...``) and use :func:`portraitseg.subject.person_model.person_alpha_from_model`.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import torch

from portraitseg.classes import NUM_CLASSES, SUBJECT_CLASSES
from portraitseg.render.alpha import check_keep, check_range
from portraitseg.render.blur import check_blur_input
from portraitseg.render.options import PERSON_DEFAULTS, check_person_options
from portraitseg.sizing import long_side, resize_tensor
from portraitseg.subject.alpha import class_masks, combine_alpha, parse_alpha
from portraitseg.subject.torso import (
    BODY_SLOPE,
    FACE_ASPECT,
    FACE_CORE,
    FEATURES,
    HAIR,
    MAX_TILT_DEG,
    MIN_FACE_PX,
    REGION_SLOPE,
    Face,
    face_geometry,
    find_faces,
    torso_prior,
)

__all__ = [
    "BODY_SLOPE", "FACE_ASPECT", "FACE_CORE", "FEATURES", "GRABCUT_SEED", "HAIR", "MAX_TILT_DEG",
    "MIN_FACE_PX", "MIN_GMM_SAMPLES", "REGION_SLOPE", "Face", "combine_person", "face_geometry",
    "find_faces", "grabcut_person", "person_alpha", "torso_prior",
]

#: GrabCut needs a few samples of each GMM's colours; below this it is skipped.
MIN_GMM_SAMPLES = 50
#: OpenCV's GrabCut initialises its GMMs with k-means++ from OpenCV's global RNG: seeded per call.
GRABCUT_SEED = 0


def grabcut_person(image: np.ndarray, sure: np.ndarray, body: np.ndarray, region: np.ndarray,
                   iterations: int = PERSON_DEFAULTS["iterations"]) -> tuple[np.ndarray, str | None]:
    """Segment the person with GrabCut: ``(person (h, w) bool, warning or None)``.

    Args:
        image: ``(h, w, 3)`` uint8 RGB working image.
        sure: sure foreground (parsed face and hair, neck strip).
        body: probable foreground (the torso prior).
        region: where the person may be; outside it is sure background.
        iterations: GrabCut iterations (GMM re-estimation + graph cut).

    Runs on the bounding box of ``region`` (plus a margin of sure background, for the background
    colour model). Without enough background or foreground samples (a face filling the frame),
    or if OpenCV fails, returns ``sure | body`` with a warning instead. Deterministic: OpenCV's
    RNG is seeded with ``GRABCUT_SEED`` before the call.
    """
    h, w = sure.shape
    fallback = sure | body
    mask = np.full((h, w), cv2.GC_BGD, np.uint8)
    mask[region] = cv2.GC_PR_BGD
    mask[body] = cv2.GC_PR_FGD
    mask[sure] = cv2.GC_FGD
    ys, xs = np.nonzero(region | sure)
    pad = max(4, round(0.05 * max(h, w)))
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + 1 + pad)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + 1 + pad)
    crop = mask[y0:y1, x0:x1].copy()
    bg = np.count_nonzero((crop == cv2.GC_BGD) | (crop == cv2.GC_PR_BGD))
    fg = np.count_nonzero((crop == cv2.GC_FGD) | (crop == cv2.GC_PR_FGD))
    if bg < MIN_GMM_SAMPLES or fg < MIN_GMM_SAMPLES:
        return fallback, None  # the person fills the frame (or is a speck): the prior is the answer
    try:
        cv2.setRNGSeed(GRABCUT_SEED)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.grabCut(np.ascontiguousarray(image[y0:y1, x0:x1]), crop, None, bgd, fgd, int(iterations),
                    cv2.GC_INIT_WITH_MASK)
    except cv2.error as err:
        first = str(err).strip().splitlines()[-1] if str(err).strip() else "error"
        return fallback, f"person extension: GrabCut failed ({first}); using the torso prior as the person"
    person = np.zeros((h, w), bool)
    person[y0:y1, x0:x1] = (crop == cv2.GC_FGD) | (crop == cv2.GC_PR_FGD)
    # Keep only the foreground connected to the seeds (no islands in the background).
    count, comp = cv2.connectedComponents(person.astype(np.uint8), connectivity=8)
    seeded = np.unique(comp[sure & person])
    keep = np.zeros(count, bool)
    keep[seeded[seeded > 0]] = True
    return keep[comp] | sure, None


def _check_inputs(image: torch.Tensor, scores: torch.Tensor, name: str) -> None:
    check_blur_input(image)
    if image.shape[1] != 3:
        raise ValueError(f"image must have shape (B, 3, H, W), got {tuple(image.shape)}")
    check_blur_input(scores, name)
    if scores.shape[0] != image.shape[0]:
        raise ValueError(f"{name} batch {scores.shape[0]} does not match image batch {image.shape[0]}")


def _small_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The photo on the working grid, range-checked there (a full-resolution check would read
    all of a 12 MP photo, 3x the time of the whole extension)."""
    small = resize_tensor(image.detach().float(), size)
    check_range(small, "image", hint="; scale uint8 photos with image.float() / 255")
    return small.clamp(0.0, 1.0)


def combine_person(person: torch.Tensor, probs: torch.Tensor | None,
                   keep: Sequence[int] = SUBJECT_CLASSES) -> torch.Tensor:
    """The subject inside a person mask: :func:`portraitseg.subject.alpha.combine_alpha`,
    ``max(person, P(kept)) * (1 - P(face classes not kept))``.

    Args:
        person: person probability ``(B, 1, h, w)`` in [0, 1].
        probs: face-parse probabilities ``(B, K, h, w)`` on the same grid, or None (-> ``person``).
        keep: kept class ids; the non-background classes not in ``keep`` are blurred even inside
            the person (selective blurring), the kept ones are sharp even outside it.

    Returns:
        alpha ``(B, 1, h, w)`` in [0, 1]. Differentiable (but the person masks of
        :func:`person_alpha` are not).
    """
    if probs is None:
        return combine_alpha(person)
    kept, dropped = (torch.from_numpy(m).to(probs) for m in class_masks(keep, probs.shape[1]))
    return parse_alpha(probs, person, kept, dropped)


def person_alpha(
    image: torch.Tensor,
    probs: torch.Tensor,
    keep: Sequence[int] = SUBJECT_CLASSES,
    *,
    work_size: int = PERSON_DEFAULTS["work_size"],
    min_face: float = PERSON_DEFAULTS["min_face"],
    iterations: int = PERSON_DEFAULTS["iterations"],
    shoulder_width: float = PERSON_DEFAULTS["shoulder_width"],
    margin: float = PERSON_DEFAULTS["margin"],
) -> tuple[torch.Tensor, list[str]]:
    """Subject alpha covering the whole person, from a Helen face parse (non-differentiable).

    Args:
        image: photo ``(B, 3, H, W)`` float in [0, 1], any size (usually full resolution).
        probs: face-parse class probabilities ``(B, 11, h, w)`` (softmax, at model resolution).
        keep: class ids kept sharp (selective blurring); face classes not in ``keep`` are
            blurred even inside the person. Default: all non-background classes.
        work_size: long side of the working grid in pixels (the photo is never upsampled).
        min_face: faces shorter than this fraction of the short side (or ``MIN_FACE_PX``
            working pixels) get no body, only their face mask.
        iterations: GrabCut iterations.
        shoulder_width: shoulder half-width of the torso prior, in face half-widths.
        margin: how far beyond the torso prior (in face half-widths) the person may extend.

    Returns:
        ``(alpha, warnings)``: alpha ``(B, 1, h', w')`` in [0, 1] on the working grid (same
        dtype and device as ``image``; upsample and refine it with the renderer), and one
        message per fallback taken (prefixed with the batch index when ``B > 1``).

    Raises:
        TypeError / ValueError: bad shapes, dtypes, values, ``keep`` ids or options.
    """
    check_person_options(work_size=work_size, min_face=min_face, iterations=iterations,
                         shoulder_width=shoulder_width, margin=margin)
    _check_inputs(image, probs, "probs")
    if probs.shape[1] != NUM_CLASSES:
        raise ValueError(
            f"person_alpha needs a Helen face parse with {NUM_CLASSES} classes, got probs of shape "
            f"{tuple(probs.shape)}; for a 2-class person model use person_alpha_from_model"
        )
    check_range(probs, "probs", hint="; pass softmax probabilities, not logits")
    keep = check_keep(keep, probs.shape[1])
    size = long_side(image.shape[-2], image.shape[-1], int(work_size), upscale=False)
    with torch.no_grad():
        small = _small_image(image, size)
        pw = resize_tensor(probs.detach().float(), size).clamp(0.0, 1.0)
        rgb = (small * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        labels = pw.cpu().numpy().argmax(1)
    persons, warnings = [], []
    for b in range(image.shape[0]):
        person, notes = _person_mask(rgb[b], labels[b], min_face=min_face, iterations=int(iterations),
                                     shoulder_width=shoulder_width, margin=margin)
        persons.append(person)
        warnings += [f"image {b}: {n}" if image.shape[0] > 1 else n for n in notes]
    person = torch.from_numpy(np.stack(persons)[:, None]).to(pw)
    alpha = combine_person(person, pw, keep)
    return alpha.to(device=image.device, dtype=image.dtype), warnings


def _person_mask(rgb: np.ndarray, labels: np.ndarray, *, min_face: float, iterations: int,
                 shoulder_width: float, margin: float) -> tuple[np.ndarray, list[str]]:
    """Person mask ``(h, w)`` float32 (1 = person; NaN-free) and warnings for one image.

    The fallbacks return ones (no face at all: no blur) or zeros (the face-parse mask then
    makes the subject alone, through the union with the kept classes).
    """
    h, w = labels.shape
    faces, small = find_faces(labels, min_face)
    notes: list[str] = []
    if not faces:
        if not (labels > 0).any():
            return np.ones((h, w), np.float32), [
                "person extension: no face found in the face parse; the photo is left sharp (no blur)"]
        if small:
            tallest = max(2 * f.size for f in small)
            return np.zeros((h, w), np.float32), [
                f"person extension: {len(small)} face(s) found but too small for a body estimate "
                f"(tallest {tallest / min(h, w):.1%} of the short side, minimum {min_face:.1%}); "
                "keeping only the face-parse mask sharp (as subject=face)"]
        return np.zeros((h, w), np.float32), [
            "person extension: the face parse shows no face (a skin region with eyes, brows, nose "
            "or mouth, or next to hair); keeping only the face-parse mask sharp (as subject=face)"]
    if small:
        notes.append(f"person extension: {len(small)} small face(s) below min_face={min_face:g} "
                     f"kept as face masks without a body ({len(faces)} person(s) extended)")
    neck, body, region = torso_prior(faces, (h, w), shoulder_width=shoulder_width, margin=margin)
    sure = (labels > 0) | neck
    person, warning = grabcut_person(rgb, sure, body, region, iterations)
    if warning:
        notes.append(warning)
    return person.astype(np.float32), notes
