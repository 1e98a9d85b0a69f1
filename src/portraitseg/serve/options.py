"""The parameters of ``POST /api/portrait``: checked once, each error naming the parameter, the
value and the valid choices (:class:`ApiError`, a 4xx status)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from portraitseg.argtypes import FocusError, parse_focus
from portraitseg.classes import model_class_ids
from portraitseg.pipeline import PIPELINE_SUBJECTS
from portraitseg.presets import RENDER_LIMITS

#: render overrides a request may give, as ``portraitseg render``'s flags of the same names
OVERRIDES = ("strength", "falloff", "feather", "highlights")
#: output formats by parameter value, and their media types
FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG"}
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png"}
#: every parameter of ``POST /api/portrait`` (query string or multipart form field)
PARAMETERS = ("preset", *OVERRIDES, "subject", "keep", "alpha", "format", "focus", "all_people")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off", "")


class ApiError(Exception):
    """A request the server cannot serve as sent: ``status`` (4xx/5xx) and a message that says
    what was wrong and what to do; sent as JSON ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, dict(headers or {})


@dataclass(frozen=True)
class RenderOptions:
    """One request's choices. ``pipeline_key`` names the pipeline they need (requests with the
    same key share one); ``fmt`` is a Pillow format name; ``focus`` a point of
    :func:`portraitseg.argtypes.parse_focus` (photo pixels, or fractions of the width and height);
    ``all_people``: without a focus, every person stays sharp (else the main subjects)."""

    preset: str
    overrides: tuple[tuple[str, float], ...] = ()
    keep: tuple[int, ...] | None = None
    subject: str | None = None
    alpha: bool = False
    fmt: str = "JPEG"
    focus: tuple[float, float] | None = None
    all_people: bool = False

    @property
    def pipeline_key(self) -> tuple:
        return (self.preset, self.overrides, self.keep, self.subject, self.all_people)

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES[self.fmt]


def _flag(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in _TRUE or value in _FALSE:
        return value in _TRUE
    raise ApiError(400, f"{name}={text!r} is not a yes/no value: pass {name}=1 or {name}=0")


def _number(name: str, text: str) -> float:
    lo, hi = RENDER_LIMITS[name]
    try:
        value = float(text)
    except ValueError:
        raise ApiError(400, f"{name}={text!r} is not a number: pass a value in [{lo:g}, {hi:g}]") from None
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ApiError(400, f"{name}={text!r} is out of range: pass a value in [{lo:g}, {hi:g}]")
    return value


def accepted_format(accept: str) -> str:
    """The output format an ``Accept`` header prefers: PNG when ``image/png`` ranks above
    ``image/jpeg``, else JPEG (also for ``*/*``, ``image/*`` or no header)."""
    ranks = {"JPEG": 0.0, "PNG": 0.0}
    for order, item in enumerate(accept.split(",")):
        kind, *params = (part.strip() for part in item.split(";"))
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        score = q - order * 1e-6  # equal q: the first listed wins
        if kind == "image/png":
            ranks["PNG"] = max(ranks["PNG"], score)
        elif kind in ("image/jpeg", "image/jpg"):
            ranks["JPEG"] = max(ranks["JPEG"], score)
    return "PNG" if ranks["PNG"] > ranks["JPEG"] else "JPEG"


def parse_options(params: Mapping[str, str], accept: str, presets: Sequence[str],
                  class_names: Sequence[str], default_preset: str) -> RenderOptions:
    """Check a request's parameters; :class:`ApiError` (400) names the first bad one.

    Args:
        params: query and form parameters (the upload itself excluded).
        accept: the request's ``Accept`` header (used when ``format`` is not given).
        presets: the render presets; class_names: the model's classes (``keep``).
    """
    unknown = sorted(set(params) - set(PARAMETERS))
    if unknown:
        raise ApiError(400, f"unknown parameter {unknown[0]!r}; the parameters are: {', '.join(PARAMETERS)}")
    preset = params.get("preset", default_preset) or default_preset
    if preset not in presets:
        raise ApiError(400, f"preset={preset!r} is not a preset; choose one of {', '.join(presets)}")
    overrides = {name: _number(name, params[name]) for name in OVERRIDES if params.get(name, "") != ""}
    if "strength" in overrides:
        overrides["sigma"] = None  # a preset's sigma would override the strength (as in the CLI)
    subject = params.get("subject") or None
    if subject is not None and subject not in PIPELINE_SUBJECTS:
        raise ApiError(400, f"subject={subject!r} is not a subject; choose one of "
                            f"{', '.join(PIPELINE_SUBJECTS)}")
    keep = None
    if params.get("keep"):
        try:
            keep = model_class_ids(params["keep"], class_names)
        except ValueError as err:
            raise ApiError(400, f"keep={params['keep']!r}: {err}") from None
    alpha = _flag("alpha", params.get("alpha", ""))
    fmt = accepted_format(accept)
    if params.get("format"):
        fmt = FORMATS.get(params["format"].strip().lower(), "")
        if not fmt:
            raise ApiError(400, f"format={params['format']!r} is not a format; choose one of "
                                f"{', '.join(FORMATS)}")
    if alpha:
        fmt = "PNG"  # the matte is a lossless 8-bit PNG
    focus = None
    if params.get("focus"):
        try:
            focus = parse_focus(params["focus"])
        except FocusError as err:
            raise ApiError(400, str(err)) from None
    return RenderOptions(preset, tuple(sorted(overrides.items())), keep, subject, alpha, fmt, focus,
                         _flag("all_people", params.get("all_people", "")))
