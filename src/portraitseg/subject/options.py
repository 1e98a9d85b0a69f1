"""The checks of :class:`portraitseg.pipeline.PortraitPipeline`'s options: each bad value is
reported by name with what it must be (:class:`~portraitseg.inputs.PipelineError`)."""

from __future__ import annotations

from collections.abc import Sequence

from portraitseg.inputs import PipelineError
from portraitseg.subject.people import PEOPLE_MODES

#: How pass 2 finds faces: ``mtcnn``, a face detector (:mod:`portraitseg.subject.faces`; never
#: on texture), or ``parse``, the head regions of the coarse parse
#: (:func:`~portraitseg.subject.heads.find_heads`; fooled by textured backgrounds). Compared in
#: experiments/face_finding/results.md.
FACE_FINDERS = ("mtcnn", "parse")


def check_sizes(**sizes: int) -> dict[str, int]:
    """``name=value`` pixel sizes and counts -> ints; ``max_faces`` must be >= 1, the others >= 32."""
    out = {}
    for name, value in sizes.items():
        low = 1 if name == "max_faces" else 32
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or int(value) != value or value < low:
            raise PipelineError(f"{name}={value!r} must be an integer >= {low}")
        out[name] = int(value)
    return out


def check_max_pixels(max_pixels: int | None) -> int | None:
    """The pixel limit: an integer >= 1, or None (no limit)."""
    if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                   or max_pixels < 1):
        raise PipelineError(f"max_pixels={max_pixels!r} must be an integer >= 1 (or None: no limit)")
    return max_pixels


def check_choices(people: str, faces: str, min_face: float) -> None:
    """``people`` in :data:`~portraitseg.subject.people.PEOPLE_MODES`, ``faces`` in
    :data:`FACE_FINDERS`, ``min_face`` a number of pixels >= 12."""
    if people not in PEOPLE_MODES:
        raise PipelineError(f"people={people!r}: choose one of {', '.join(PEOPLE_MODES)}")
    if faces not in FACE_FINDERS:
        raise PipelineError(f"faces={faces!r}: choose one of {', '.join(FACE_FINDERS)}")
    if isinstance(min_face, bool) or not isinstance(min_face, (int, float)) or not min_face >= 12:
        raise PipelineError(f"min_face={min_face!r} must be a number of pixels >= 12 (the face "
                            "detector's smallest window)")


def check_keep(keep: Sequence[int], classes: int) -> tuple[int, ...]:
    """Kept class ids of a ``classes``-class model, sorted and unique."""
    keep = tuple(keep)
    bad = [k for k in keep if not 0 <= int(k) < classes]
    if not keep or bad:
        raise PipelineError(f"keep={keep}: class ids must be in 0..{classes - 1} for this "
                            f"{classes}-class model")
    return tuple(sorted({int(k) for k in keep}))


__all__ = ["FACE_FINDERS", "check_choices", "check_keep", "check_max_pixels", "check_sizes"]
