"""Drawing one synthetic portrait: a detailed background and a person (face, hair, neck, shoulders,
clothes) as a stack of antialiased layers, composited into the image, its Helen labels and its
ground-truth layers (:func:`make_sample`). The scene is drawn by :mod:`.scene`, the person by
:mod:`.person`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from portraitseg.classes import NUM_CLASSES
from portraitseg.data.synthetic.person import draw_person
from portraitseg.data.synthetic.scene import Canvas, draw_background

#: Bumped whenever the drawing changes, so a cached dataset from an older generator is replaced.
GENERATOR_VERSION = 1
MIN_SIZE, MAX_SIZE = 32, 4096


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
    h, w = parse_size(size)
    if index < 0 or seed < 0:
        raise ValueError(f"index and seed must be >= 0, got index={index}, seed={seed}")
    rng = np.random.default_rng([seed, index])
    cv = Canvas(h, w)
    bg = draw_background(rng, cv)

    # Composite back to front: premultiplied colour, alpha, and the visible weight of every class
    # (the background plane starts with weight 1; each layer hides a share of what lies below).
    colour = np.zeros((h, w, 3), np.float32)
    alpha = np.zeros((h, w), np.float32)
    weights = np.zeros((NUM_CLASSES, h, w), np.float32)
    weights[0] = 1.0
    for layer in draw_person(rng, cv):
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


def parse_size(size: int | Sequence[int] | str) -> tuple[int, int]:
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
