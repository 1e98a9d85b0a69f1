"""Albumentations pipelines: label-aware training augmentation and letterboxed evaluation."""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

from portraitseg.classes import FLIP_PERMUTATION, NUM_CLASSES


class HorizontalFlipSwap(A.DualTransform):
    """Horizontal flip that also swaps left/right classes in the mask (2<->3 brows, 4<->5 eyes).

    Helen's "left" is the viewer's left, so a mirrored face has its left brow where the right one
    was. With a non-Helen class count (e.g. binary person masks) it is a plain flip. ``masks``
    (soft mattes such as the person target) are flipped without any swap.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.num_classes = num_classes
        self._lut = np.arange(256, dtype=np.uint8)
        if num_classes == NUM_CLASSES:
            self._lut[:NUM_CLASSES] = FLIP_PERMUTATION

    def apply(self, img: np.ndarray, **params: Any) -> np.ndarray:
        return np.ascontiguousarray(img[:, ::-1])

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return np.ascontiguousarray(self._lut[mask[:, ::-1]])

    def apply_to_masks(self, masks: np.ndarray, **params: Any) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(masks)[:, :, ::-1])

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("num_classes",)


def train_transform(
    image_size: int,
    scale: tuple[float, float] = (0.75, 1.25),
    rotate: float = 15.0,
    shift: float = 0.1,
    color: float = 0.2,
    flip: float = 0.5,
    num_classes: int = NUM_CLASSES,
    crop: float = 0.0,
    crop_scale: tuple[float, float] = (0.2, 1.0),
) -> A.Compose:
    """Letterbox to ``image_size`` then random scale/rotate/shift, colour jitter and flip.

    ``color`` is the brightness/contrast/saturation jitter strength (hue gets a quarter of it);
    0 disables a step. Border pixels introduced by the geometry are black and labelled background.
    With ``crop > 0``, that share of the samples is instead a random crop covering ``crop_scale``
    of the image (aspect 3:4..4:3) resized to the square input: whole-body photos also yield
    half-body and head-and-shoulders views. The pipeline takes ``image``, ``mask`` (class ids,
    left/right-aware) and optionally ``masks`` (soft mattes, e.g. the person target).
    """
    letterbox = [
        A.LongestMaxSize(max_size=image_size),
        A.PadIfNeeded(image_size, image_size, border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0),
    ]
    steps: list[A.BasicTransform] = letterbox
    if crop:
        if not 0 < crop <= 1 or not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"augment.crop must be in (0, 1] and crop_scale within (0, 1], got "
                             f"crop={crop}, crop_scale={tuple(crop_scale)}")
        resized_crop = A.RandomResizedCrop((image_size, image_size), scale=tuple(crop_scale),
                                           ratio=(0.75, 4 / 3), p=crop)
        steps = [A.OneOf([resized_crop, A.Sequential(letterbox, p=max(1.0 - crop, 1e-6))], p=1.0)]
    if scale != (1.0, 1.0) or rotate or shift:
        steps.append(
            A.Affine(
                scale=tuple(scale),
                rotate=(-rotate, rotate),
                translate_percent=(-shift, shift),
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=0.9,
            )
        )
    if color:
        steps.append(A.ColorJitter(color, color, color, min(color / 4, 0.5), p=0.8))
    if flip:
        steps.append(HorizontalFlipSwap(num_classes=num_classes, p=flip))
    return A.Compose(steps)


class EvalTransform:
    """Resize the long side to ``image_size`` and pad bottom/right to a square.

    Returns ``valid_size`` ``(h, w)``: the un-padded region, so predictions map back to the
    original photo by cropping ``[:h, :w]`` and resizing to its size.
    """

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.resize = A.LongestMaxSize(max_size=image_size, p=1.0)
        self.pad = A.PadIfNeeded(
            image_size, image_size, position="top_left",
            border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=1.0,
        )

    def __call__(self, image: np.ndarray, mask: np.ndarray, **targets: Any) -> dict:
        out = self.resize(image=image, mask=mask, **targets)
        valid_size = out["image"].shape[:2]
        out = self.pad(**out)
        out["valid_size"] = valid_size
        return out
