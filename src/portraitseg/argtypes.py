"""argparse value types that check a number once, up front: finite and in range, else argparse's
usage error (exit status 2, naming the option), before anything heavy is imported or run."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def int_in(lo: int, hi: int | None = None) -> Callable[[str], int]:
    """An integer in ``lo..hi`` (``hi`` None: no upper bound)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            span = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {span}")
        return value

    parse.__name__ = "integer"
    return parse


def float_in(lo: float, hi: float) -> Callable[[str], float]:
    """A finite float in ``[lo, hi]`` (``inf`` and ``nan`` are refused)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value:g} is out of range: must be in [{lo:g}, {hi:g}]")
        return value

    parse.__name__ = "number"
    return parse


class FocusError(argparse.ArgumentTypeError, ValueError):
    """A focus point that is not ``X,Y`` (the message names the text and the fix)."""


def _focus_number(text: str, part: str) -> float:
    """One coordinate of :func:`parse_focus`: an int, or a float in [0, 1]."""
    try:
        return int(part)
    except ValueError:
        pass
    try:
        value = float(part)
    except ValueError:
        raise FocusError(f"focus {text!r}: {part!r} is not a number") from None
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise FocusError(f"focus {text!r}: {part!r}: a decimal is a fraction of the width or height in "
                         "[0, 1]; pixels are whole numbers (640,360)")
    return value


def parse_focus(text: str) -> tuple[float, float]:
    """``"X,Y"`` -> a focus point: whole numbers are photo pixels (``"640,360"`` -> ``(640, 360)``
    ints), decimals fractions of the width and height in [0, 1] (``"0.5,0.4"`` -> floats); the
    two may be mixed. The point is what :meth:`portraitseg.pipeline.PortraitPipeline.forward`
    takes as ``focus``.

    Raises:
        FocusError: (an argparse type error and a ValueError) naming ``text``: not two numbers,
            a negative or non-finite one, a decimal outside [0, 1].
    """
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 2 or not all(parts):
        raise FocusError(f"focus {text!r} is not X,Y: pass two numbers, pixels (640,360) or "
                         "fractions of the width and height (0.5,0.4)")
    point: list[float] = []
    for part in parts:
        value = _focus_number(text, part)
        if value < 0:
            raise FocusError(f"focus {text!r}: {part!r} is negative; (0,0) is the top-left corner")
        point.append(value)
    return point[0], point[1]
