"""Who stays sharp: the person matte split into people, and the choice of the people kept.

The steps, plain torch on the matte's device, on a small grid (long side ``PeopleOptions.grid``)::

    person matte (B, 1, h, w) --threshold--> mask --8-connected components--> blobs
    --a blob holding two faces or more: split by seeded growth from each face's box and the
        column under it (inside the blob, each pixel goes to the seed it is reached from first;
        a face with a body above it is no head and seeds nothing)--> people ids
    --choose: the person under ``focus`` (or the nearest within a tolerance), else the main
        subjects (``people="main"``) or everyone (``people="all"``)-->
    --each person's territory (its pixels grown a little into the background, so that its soft
        edges go with it)--> factor (B, 1, h, w): 0 on the territories of dropped people, else 1

The subject alpha is multiplied by the factor (:func:`select_people`): a kept person's alpha,
the kept classes of its face included, stays as it is; everything that belongs to no person is
left as it is too.

The main subjects (``people="main"``): a person is a subject when its size, the square root of
its area on the grid, is at least ``main_ratio`` times the largest person's (a stand-in for its
distance: the people behind are smaller); people touching a subject (the same blob) are kept
with it, unless a face split them off that is under ``main_ratio`` times the largest such face
(someone far behind who overlaps the subject in the picture). The rule and its ratio were
chosen on composed photos of CCP people (``experiments/main_subjects/results.md``).

Face boxes give the seeds: the central ``seed_fraction`` of each box (boxes of zero width are
no face). The region steps are :mod:`portraitseg.subject.regions`. On accelerators nothing here
reads a tensor back to the host except a focus (the person under it); on the CPU the iterative
steps also stop once they no longer change anything.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from portraitseg.subject.regions import grow, label_regions

#: What ``people`` may be: ``main`` (the main subjects, default) or ``all`` (everyone).
PEOPLE_MODES = ("main", "all")

#: A focus point ``(x, y)``: photo pixels, or fractions of the width and height (floats in [0, 1]).
Focus = tuple[float, float]


class PeopleError(ValueError):
    """Inputs the people choice cannot use (the message names the input and the fix)."""


@dataclass(frozen=True)
class PeopleOptions:
    """How people are found and chosen.

    Attributes:
        threshold: matte probability above which a pixel belongs to a person.
        grid: long side of the grid the people are found on (pixels).
        main_ratio: ``people="main"`` keeps the people whose size is at least this fraction of
            the largest one's.
        min_area: blobs smaller than this fraction of the grid are no people (specks of the
            matte): left as they are.
        measure: a person's size: ``area`` (the square root of its area) or ``height`` (of its
            bounding box).
        seed_fraction: the central part of a face box that seeds its person.
        reach: a person's territory: its pixels grown by this fraction of the grid's long side.
        focus_tolerance: a focus off every person takes the nearest one within this fraction of
            the photo's long side.
    """

    threshold: float = 0.5
    grid: int = 160
    main_ratio: float = 0.6
    measure: str = "area"
    min_area: float = 0.001
    seed_fraction: float = 1 / 3
    reach: float = 0.04
    focus_tolerance: float = 0.05

    def __post_init__(self) -> None:
        checks = {"threshold": 0 < self.threshold < 1, "grid": 16 <= self.grid <= 4096,
                  "main_ratio": 0 <= self.main_ratio <= 1, "seed_fraction": 0 < self.seed_fraction <= 1,
                  "reach": 0 <= self.reach <= 1, "focus_tolerance": 0 <= self.focus_tolerance <= 1,
                  "measure": self.measure in ("area", "height"), "min_area": 0 <= self.min_area < 1}
        for name, ok in checks.items():
            if not ok:
                raise PeopleError(f"PeopleOptions.{name}={getattr(self, name)!r} is out of range")


@dataclass
class People:
    """The people of a batch on the grid ``(h, w)``.

    Attributes:
        ids: ``(B, 1, h, w)`` long, 0 where no person, else the person's id (< ``count``).
        blobs: ``(B, 1, h, w)`` long, the 8-connected blob of each person pixel (0 elsewhere).
        count: the size of the id space (ids and blob ids are both below it).
        face_size: ``(B, count)`` float, the face width (grid pixels) of each person split from
            a blob by its face, 0 for the others; None: no face split anyone.
    """

    ids: torch.Tensor
    blobs: torch.Tensor
    count: int
    face_size: torch.Tensor | None = None


def face_seeds(faces: torch.Tensor, grid: tuple[int, int], photo: tuple[int, int],
               fraction: float, below: bool = False) -> torch.Tensor:
    """``(B, M, h, w)`` bool: the central ``fraction`` of each face box ``(B, M, 4)`` (photo
    pixels ``x0, y0, x1, y1``; zero width: no face) on the grid, at least the pixel under its
    centre; ``below``: and the column under it, down to the grid's bottom (where an upright
    person's body is)."""
    h, w = grid
    sx, sy = w / photo[1], h / photo[0]
    boxes = faces.float()
    x0, y0, x1, y1 = (boxes * boxes.new_tensor([sx, sy, sx, sy])).unbind(-1)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    hx = ((x1 - x0) * fraction / 2).clamp(min=0.5)[..., None, None]
    hy = ((y1 - y0) * fraction / 2).clamp(min=0.5)[..., None, None]
    xs = torch.arange(w, device=faces.device, dtype=torch.float32) + 0.5
    ys = torch.arange(h, device=faces.device, dtype=torch.float32) + 0.5
    inside_x = (xs.view(1, 1, 1, w) - cx[..., None, None]).abs() <= hx
    inside_y = (ys.view(1, 1, h, 1) - cy[..., None, None]).abs() <= hy
    if below:
        inside_y = inside_y | (ys.view(1, 1, h, 1) >= cy[..., None, None])
    return inside_x & inside_y & (faces[..., 2] > faces[..., 0])[..., None, None]


def find_people(matte: torch.Tensor, faces: torch.Tensor, photo: tuple[int, int],
                options: PeopleOptions = PeopleOptions()) -> People:
    """Split a person matte into people.

    Args:
        matte: person probability ``(B, 1, h', w')`` (any grid covering the photo).
        faces: ``(B, M, 4)`` face boxes ``x0, y0, x1, y1`` in photo pixels (zero width: none).
        photo: ``(H, W)`` of the photo.

    Returns:
        :class:`People` on the grid of long side ``options.grid`` (or the matte's, if smaller).
    """
    if matte.ndim != 4 or matte.shape[1] != 1:
        raise PeopleError(f"matte must be (B, 1, h, w), got {tuple(matte.shape)}")
    if faces.ndim != 3 or faces.shape[0] != matte.shape[0] or faces.shape[-1] != 4:
        raise PeopleError(f"faces must be (B, M, 4) with B={matte.shape[0]}, got {tuple(faces.shape)}")
    h1, w1 = matte.shape[-2:]
    scale = min(1.0, options.grid / max(h1, w1))
    grid = (max(1, round(h1 * scale)), max(1, round(w1 * scale)))
    small = F.interpolate(matte.float(), size=grid, mode="area") if grid != (h1, w1) else matte.float()
    mask = small > options.threshold
    h, w = grid
    blobs = label_regions(mask, h + w)
    flat = blobs.long().flatten(1)
    area = _scatter(flat, torch.ones_like(flat, dtype=torch.float32), h * w + 1, "sum")
    speck = (area.gather(1, flat) < options.min_area * h * w).view_as(mask)
    mask = mask & ~speck
    blobs = blobs * mask
    faces = faces * heads_on_top(faces, mask, photo)[..., None]  # a face inside a body is no one's
    heads = face_seeds(faces, grid, photo, options.seed_fraction) & mask  # (B, M, h, w)
    face_blob = (heads * blobs).flatten(2).amax(2)  # (B, M): the blob of each face, 0 if none
    same = (face_blob[..., None, None] == blobs) & (face_blob[..., None, None] > 0)
    grown = grow(_seed_labels(heads, face_seeds(faces, grid, photo, options.seed_fraction, True) & same),
                 mask, 2 * (h + w))
    several = same.sum(1, keepdim=True) >= 2
    ids = torch.where(several & (grown > 0), grown + h * w, blobs)
    m, count = faces.shape[1], h * w + faces.shape[1] + 1
    split = (same & several).flatten(2).any(2)  # (B, M): faces that split their blob
    width = (faces[..., 2] - faces[..., 0]).float() * w / photo[1] * split
    face_size = torch.zeros(faces.shape[0], count, device=matte.device).index_copy_(
        1, torch.arange(h * w + 1, count, device=matte.device), width)
    return People(ids.long(), blobs.long(), count, face_size if m else None)


def heads_on_top(faces: torch.Tensor, mask: torch.Tensor, photo: tuple[int, int]) -> torch.Tensor:
    """``(B, M)`` bool: the face boxes ``(B, M, 4)`` (photo pixels) that top a person: the band
    from 1 to 0.5 face heights above the box, as wide as the box, is mostly not in the person
    ``mask`` ``(B, 1, h, w)`` (outside the photo counts as not). A face printed on a shirt, or
    seen through a crowd of bodies, has a body above it and splits no one."""
    h, w = mask.shape[-2:]
    sx, sy = w / photo[1], h / photo[0]
    x0, y0, x1, y1 = (faces.float() * faces.new_tensor([sx, sy, sx, sy]).float()).unbind(-1)
    tall = (y1 - y0).clamp(min=1.0)
    top, bottom = y0 - tall, (y0 - 0.5 * tall).clamp(min=y0 - tall + 1)
    xs = torch.arange(w, device=faces.device, dtype=torch.float32).view(1, 1, 1, w) + 0.5
    ys = torch.arange(h, device=faces.device, dtype=torch.float32).view(1, 1, h, 1) + 0.5
    band = ((xs >= x0[..., None, None]) & (xs < x1[..., None, None]) & (ys >= top[..., None, None])
            & (ys < bottom[..., None, None]))
    inside = (band & mask).flatten(2).sum(2).float()
    area = ((x1 - x0).clamp(min=1.0) * (bottom - top)).clamp(min=1.0)
    return (inside < 0.5 * area) & (faces[..., 2] > faces[..., 0])


def _seed_labels(heads: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
    """``(B, 1, h, w)`` float seed labels ``1..M`` from ``(B, M, h, w)`` head and column seeds:
    heads first, then the column pixels that one face alone claims."""
    m = heads.shape[1]
    index = torch.arange(1, m + 1, device=heads.device, dtype=torch.float32).view(1, m, 1, 1)
    head = (heads * index).amax(1, keepdim=True)
    column = (columns * index).amax(1, keepdim=True) * (columns.sum(1, keepdim=True) == 1)
    return torch.where(head > 0, head, column)


def _scatter(ids: torch.Tensor, values: torch.Tensor, count: int, how: str) -> torch.Tensor:
    """Reduce ``values`` ``(B, n)`` by ``ids`` ``(B, n)`` into ``(B, count)`` (``sum`` / ``amax``)."""
    out = torch.zeros(ids.shape[0], count, device=ids.device, dtype=values.dtype)
    return out.scatter_reduce_(1, ids, values, how, include_self=True)


def person_sizes(people: People, measure: str = "area") -> tuple[torch.Tensor, torch.Tensor]:
    """``(size, area)`` ``(B, count)`` of each person id (grid pixels): ``size`` is the square root
    of the area (``measure="area"``) or the height of the bounding box (``"height"``)."""
    ids = people.ids.flatten(1)
    area = _scatter(ids, torch.ones_like(ids, dtype=torch.float32), people.count, "sum")
    area[:, 0] = 0
    if measure == "area":
        return area.sqrt(), area
    h, w = people.ids.shape[-2:]
    ys = torch.arange(h, device=ids.device, dtype=torch.float32).repeat_interleave(w).expand_as(ids)
    top = torch.full_like(area, float(h)).scatter_reduce_(1, ids, ys, "amin", include_self=True)
    bottom = _scatter(ids, ys + 1, people.count, "amax")
    return (bottom - top).clamp(min=0) * (area > 0), area


def main_people(people: People, ratio: float, measure: str = "area") -> torch.Tensor:
    """``(B, count)`` bool: the main subjects (size ``>= ratio`` x the largest's,
    :func:`person_sizes`) and the people touching them (their blob), except the people split
    from it by a face smaller than ``ratio`` x the largest such face (someone far behind the
    subject, overlapping it in the picture)."""
    ids, blobs = people.ids.flatten(1), people.blobs.flatten(1)
    size, area = person_sizes(people, measure)
    big = (size >= ratio * size.amax(1, keepdim=True)) & (area > 0)
    blob_kept = _scatter(blobs, big.gather(1, ids).float(), people.count, "amax") > 0
    blob_kept[:, 0] = False
    blob_of = _scatter(ids, blobs.float(), people.count, "amax").long()
    kept = blob_kept.gather(1, blob_of) & (area > 0)
    if people.face_size is None:
        return kept
    face = people.face_size
    far = (face > 0) & (face < ratio * face.amax(1, keepdim=True))
    return kept & (big | ~far)


def focus_person(people: People, point: tuple[float, float], photo: tuple[int, int],
                 tolerance: float) -> int:
    """The id of the person under ``point`` (photo pixels ``x, y``) of a one-photo
    :class:`People`, or of the nearest within ``tolerance`` x the photo's long side; 0: none."""
    ids = people.ids[0, 0]
    h, w = ids.shape
    gx, gy = point[0] * w / photo[1], point[1] * h / photo[0]
    if not (0 <= gx < w and 0 <= gy < h):
        return 0
    under = int(ids[int(gy), int(gx)])
    if under:
        return under
    ys, xs = torch.nonzero(ids, as_tuple=True)
    if ys.numel() == 0:
        return 0
    dist = torch.hypot((xs.float() + 0.5 - gx) * photo[1] / w, (ys.float() + 0.5 - gy) * photo[0] / h)
    nearest = int(dist.argmin())
    return int(ids[ys[nearest], xs[nearest]]) if dist[nearest] <= tolerance * max(photo) else 0


def focus_pixels(point: Sequence[float], photo: tuple[int, int]) -> tuple[float, float]:
    """A focus ``(x, y)`` in photo pixels: ints and floats over 1 are pixels, floats in [0, 1]
    fractions of the width and height.

    Raises:
        PeopleError: not two finite numbers >= 0.
    """
    if isinstance(point, (str, bytes)) or not isinstance(point, Sequence) or len(point) != 2:
        raise PeopleError(f"focus={point!r}: expected a point (x, y), e.g. (320, 200) pixels or (0.5, 0.4)")
    out = []
    for value, side in zip(point, (photo[1], photo[0]), strict=True):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or value < 0:
            raise PeopleError(f"focus={tuple(point)!r}: coordinates must be finite numbers >= 0 "
                              "(pixels, or fractions in [0, 1])")
        fraction = isinstance(value, float) and value <= 1
        out.append(float(value) * side if fraction else float(value))
    return out[0], out[1]


def _focus_list(focus: Focus | Sequence[Focus | None] | None, batch: int) -> list[Focus | None]:
    """One focus (or None) per photo of the batch."""
    if focus is None:
        return [None] * batch
    if isinstance(focus, Sequence) and len(focus) == 2 and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in focus):
        if batch != 1:
            raise PeopleError(f"focus={tuple(focus)!r} is one point for a batch of {batch} photos; "
                              "pass a list with one point (or None) per photo")
        return [tuple(focus)]  # type: ignore[list-item]
    points = list(focus)
    if len(points) != batch:
        raise PeopleError(f"focus has {len(points)} entries for {batch} photos: pass one point "
                          "(or None) per photo")
    return points


def choose_people(people: People, photo: tuple[int, int], focus: Focus | Sequence[Focus | None] | None,
                  mode: str, options: PeopleOptions = PeopleOptions()) -> tuple[torch.Tensor, list[str]]:
    """``(kept (B, count) bool, notes)``: the focused person where a focus hits one, else the
    main subjects (``mode="main"``) or everyone (``"all"``)."""
    if mode not in PEOPLE_MODES:
        raise PeopleError(f"people={mode!r}: choose one of {', '.join(PEOPLE_MODES)}")
    points = _focus_list(focus, people.ids.shape[0])
    flat = people.ids.flatten(1)
    present = _scatter(flat, torch.ones_like(flat), people.count, "amax") > 0
    present[:, 0] = False
    kept = main_people(people, options.main_ratio, options.measure) if mode == "main" else present
    notes = []
    for i, point in enumerate(points):
        if point is None:
            continue
        x, y = focus_pixels(point, photo)
        one = People(people.ids[i:i + 1], people.blobs[i:i + 1], people.count)
        chosen = focus_person(one, (x, y), photo, options.focus_tolerance)
        if chosen:
            kept[i] = False
            kept[i, chosen] = True
        else:
            fallback = "the main subjects" if mode == "main" else "everyone"
            notes.append(f"no person at {x:g},{y:g} (the photo is {photo[1]}x{photo[0]}); keeping {fallback}")
    return kept, notes


def people_factor(
    people: People, kept: torch.Tensor, options: PeopleOptions = PeopleOptions()
) -> torch.Tensor:
    """``(B, 1, h, w)`` float: 0 on the territories of the people not ``kept`` ``(B, count)``,
    1 elsewhere (kept people and what belongs to no one)."""
    h, w = people.ids.shape[-2:]
    reach = round(options.reach * max(h, w))
    territory = grow(people.ids.float(), None, reach).long()
    dropped = (~kept).gather(1, territory.flatten(1)).view_as(territory) & (territory > 0)
    return 1.0 - dropped.float()


def select_people(
    alpha: torch.Tensor, matte: torch.Tensor | None, faces: torch.Tensor, photo: tuple[int, int],
    focus: Focus | Sequence[Focus | None] | None = None, people: str = "main",
    options: PeopleOptions = PeopleOptions(),
) -> tuple[torch.Tensor, list[str]]:
    """The subject alpha with the people not chosen taken out.

    Args:
        alpha: subject alpha ``(B, 1, h, w)`` (any grid covering the photo).
        matte: person probability ``(B, 1, h', w')``, or None (no person matte: nothing chosen).
        faces: ``(B, M, 4)`` face boxes in photo pixels (zero width: none), the seeds that split
            touching people.
        photo: ``(H, W)``.
        focus: a point ``(x, y)`` for a batch of one, or one point (or None) per photo; pixels,
            or fractions in [0, 1] (floats).
        people: ``main`` (the main subjects) or ``all`` (everyone; with no focus the alpha is
            returned as it is).

    Returns:
        ``(alpha (B, 1, h, w), notes)``.
    """
    if people not in PEOPLE_MODES:
        raise PeopleError(f"people={people!r}: choose one of {', '.join(PEOPLE_MODES)}")
    if matte is None:
        note = "the model has no person matte: the focus is ignored, every person is kept sharp"
        return alpha, [note] if focus is not None else []
    if people == "all" and focus is None:
        return alpha, []
    found = find_people(matte, faces, photo, options)
    kept, notes = choose_people(found, photo, focus, people, options)
    factor = people_factor(found, kept, options)
    factor = F.interpolate(factor, size=tuple(alpha.shape[-2:]), mode="bilinear", align_corners=False)
    return alpha * factor.to(alpha.dtype), notes


__all__ = ["PEOPLE_MODES", "Focus", "People", "PeopleError", "PeopleOptions", "choose_people",
           "face_seeds", "find_people", "focus_person", "focus_pixels", "heads_on_top", "main_people",
           "people_factor", "person_sizes", "select_people"]
