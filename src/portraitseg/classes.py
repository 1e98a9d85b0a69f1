"""The 11 Helen face-parsing classes (Smith et al. 2013 order): names, palette, flip map.

This module is the only place that knows the class list. "Left" is the viewer's left, so a
horizontal flip of an image must swap left/right brows (2<->3) and eyes (4<->5) in its label.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # not imported at run time: the CLIs read the class list without PyTorch
    import torch

CLASS_NAMES: tuple[str, ...] = (
    "background",
    "skin",
    "left_brow",
    "right_brow",
    "left_eye",
    "right_eye",
    "nose",
    "upper_lip",
    "inner_mouth",
    "lower_lip",
    "hair",
)
NUM_CLASSES = len(CLASS_NAMES)
BACKGROUND = 0

#: RGB colour per class id, for overlays and colourised label PNGs.
PALETTE: np.ndarray = np.array(
    [
        [0, 0, 0],
        [255, 204, 153],
        [102, 51, 0],
        [153, 76, 0],
        [0, 102, 255],
        [0, 204, 255],
        [255, 102, 102],
        [204, 0, 51],
        [102, 0, 102],
        [255, 51, 153],
        [128, 64, 192],
    ],
    dtype=np.uint8,
)

#: ``label[..., ::-1]`` of a flipped image must be mapped through this permutation.
FLIP_PERMUTATION: tuple[int, ...] = (0, 1, 3, 2, 5, 4, 6, 7, 8, 9, 10)

#: Groups of the face-parsing literature's "overall F1" (brows, eyes, nose, mouth).
F1_GROUPS: dict[str, tuple[int, ...]] = {
    "brows": (2, 3),
    "eyes": (4, 5),
    "nose": (6,),
    "mouth": (7, 8, 9),
}
OVERALL_CLASSES: tuple[int, ...] = tuple(c for group in F1_GROUPS.values() for c in group)

#: Default classes kept sharp by the portrait renderer: everything but the background.
SUBJECT_CLASSES: tuple[int, ...] = tuple(range(1, NUM_CLASSES))


def class_ids(spec: str | Iterable[str | int] | None) -> tuple[int, ...]:
    """Parse a class selection into sorted unique ids.

    Accepts ``None`` (all subject classes), a comma-separated string (``"hair,skin"``), or an
    iterable of names / ids. Group names from :data:`F1_GROUPS` (``brows``, ``eyes``, ``mouth``)
    and ``"face"`` (every class but background and hair) are accepted too.
    """
    if spec is None:
        return SUBJECT_CLASSES
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    ids: set[int] = set()
    for item in items:
        if isinstance(item, str):
            name = item.strip().lower().replace("-", "_")
            if not name:
                continue
            if name.isdigit():
                item = int(name)
            elif name in CLASS_NAMES:
                ids.add(CLASS_NAMES.index(name))
                continue
            elif name in F1_GROUPS:
                ids.update(F1_GROUPS[name])
                continue
            elif name == "face":
                ids.update(c for c in SUBJECT_CLASSES if c != CLASS_NAMES.index("hair"))
                continue
            else:
                known = ", ".join([*CLASS_NAMES, *F1_GROUPS, "face"])
                raise ValueError(f"unknown class {item!r}; known classes: {known}")
        if not 0 <= int(item) < NUM_CLASSES:
            raise ValueError(f"class id {item} outside 0..{NUM_CLASSES - 1}")
        ids.add(int(item))
    if not ids:
        raise ValueError(f"empty class selection {spec!r}")
    return tuple(sorted(ids))


def model_class_ids(spec: str | Iterable[str | int] | None, class_names: Sequence[str]) -> tuple[int, ...]:
    """A class selection of a model whose classes are ``class_names``: :func:`class_ids` for a
    Helen parser; otherwise names or ids of those classes (None: all but class 0, background).

    Raises:
        ValueError: an unknown name or id (listing the model's classes), or an empty selection.
    """
    names = list(class_names)
    if names == list(CLASS_NAMES):
        return class_ids(spec)
    if spec is None:
        return tuple(range(1, len(names)))
    ids: set[int] = set()
    for item in spec.split(",") if isinstance(spec, str) else spec:
        text = str(item).strip()
        if text.isdigit() and int(text) < len(names):
            ids.add(int(text))
        elif text in names:
            ids.add(names.index(text))
        elif text:
            raise ValueError(f"unknown class {text!r}; this model's classes: {', '.join(names)} "
                             f"(or ids 0..{len(names) - 1})")
    if not ids:
        raise ValueError(f"empty class selection {spec!r}")
    return tuple(sorted(ids))


def flip_label(label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Mirror a label map ``(..., H, W)`` horizontally and swap left/right classes."""
    torch = sys.modules.get("torch")  # a tensor exists only if torch was imported
    if torch is not None and isinstance(label, torch.Tensor):
        lut = torch.tensor(FLIP_PERMUTATION, dtype=label.dtype, device=label.device)
        return lut[label.flip(-1).long()]
    lut = np.asarray(FLIP_PERMUTATION, dtype=label.dtype)
    return lut[label[..., ::-1]]


def flip_logits(logits: torch.Tensor) -> torch.Tensor:
    """Un-flip class scores ``(B, K, H, W)`` predicted on a mirrored image (flip TTA)."""
    return logits.flip(-1)[:, list(FLIP_PERMUTATION)]


def colorize(label: np.ndarray) -> np.ndarray:
    """Map a class-id map ``(H, W)`` to RGB ``(H, W, 3)`` uint8 with :data:`PALETTE`."""
    return PALETTE[np.clip(label, 0, NUM_CLASSES - 1)]
