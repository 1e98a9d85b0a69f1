"""Options of the renderer's subject (what a portrait keeps sharp) and of the GrabCut person extension
(:func:`portraitseg.subject.grabcut.person_alpha`), checked where a renderer is built."""

from __future__ import annotations

from typing import Any

#: What a portrait keeps sharp: the whole person, or the parsed face classes only (the paper).
SUBJECTS = ("person", "person_grabcut", "face")
#: Defaults of :func:`portraitseg.subject.grabcut.person_alpha` (192 px / 2 iterations: see
#: experiments/person/results.md).
PERSON_DEFAULTS: dict[str, Any] = {
    "work_size": 192,
    "min_face": 0.05,
    "iterations": 2,
    "shoulder_width": 2.3,
    "margin": 0.8,
}


def check_person_options(*, work_size: int, min_face: float, iterations: int, shoulder_width: float,
                         margin: float) -> None:
    """Raise ``ValueError`` naming the option for any bad person-extension option."""
    if int(work_size) != work_size or work_size < 32:
        raise ValueError(f"person option work_size={work_size!r} must be an integer >= 32 "
                         "(pixels, long side)")
    if not 0 <= min_face < 1:
        raise ValueError(f"person option min_face={min_face!r} must be in [0, 1) (face height / short side)")
    if int(iterations) != iterations or not 1 <= iterations <= 10:
        raise ValueError(f"person option iterations={iterations!r} must be an integer in 1..10")
    if not shoulder_width > 0:
        raise ValueError(f"person option shoulder_width={shoulder_width!r} must be > 0 (face widths)")
    if not margin >= 0:
        raise ValueError(f"person option margin={margin!r} must be >= 0 (face widths)")


__all__ = ["PERSON_DEFAULTS", "SUBJECTS", "check_person_options"]
