"""HelenDataset: decode, orient and validate one sample, then apply the transform."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from portraitseg.classes import NUM_CLASSES
from portraitseg.data.layouts import Sample
from portraitseg.io import DEFAULT_MAX_PIXELS, InputError, read_image, read_label

log = logging.getLogger(__name__)

Transform = Callable[..., dict]


def load_sample(
    sample: Sample, max_pixels: int | None = DEFAULT_MAX_PIXELS, num_classes: int = NUM_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``sample`` into RGB ``(H, W, 3)`` uint8 and class ids ``(H, W)`` uint8.

    Smith soft maps are merged by per-pixel argmax. With ``num_classes == 2`` (binary person
    masks) any non-zero value is foreground, so 0/1 and 0/255 masks both work. Raises
    :class:`InputError` naming the file when the label does not fit the image or the classes.
    """
    image = read_image(sample.image, max_pixels)
    if sample.label is None:
        raise InputError(f"{sample.image}: no label file")
    if isinstance(sample.label, tuple):
        maps = [read_label(p, max_pixels) for p in sample.label]
        if len({m.shape for m in maps}) != 1:
            raise InputError(f"{sample.label[0].parent}: soft label maps differ in size")
        label = np.argmax(np.stack(maps), axis=0).astype(np.uint8)
        label_name = sample.label[0].parent
    else:
        label = read_label(sample.label, max_pixels)
        label_name = sample.label
    if label.shape != image.shape[:2]:
        raise InputError(
            f"{label_name}: label is {label.shape[1]}x{label.shape[0]} but its image "
            f"{sample.image.name} is {image.shape[1]}x{image.shape[0]}"
        )
    if num_classes == 2:
        label = (label > 0).astype(np.uint8)
    elif label.max() >= num_classes:
        bad = sorted(int(v) for v in np.unique(label) if v >= num_classes)
        raise InputError(
            f"{label_name}: label ids {bad} outside 0..{num_classes - 1} "
            f"(labels must be class-id PNGs, pixel value = class id"
            + ("; 0/255 masks look like person masks: check them with `python -m portraitseg.data "
               "check ROOT --person label` and train them as a person source of data=mixed)"
               if bad == [255] else ")")
        )
    return image, label


def to_tensors(image: np.ndarray, label: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """``(H, W, 3)`` uint8 + ``(H, W)`` -> image ``(3, H, W)`` float in [0, 1], mask ``(H, W)`` int64."""
    img = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255)
    return img, torch.from_numpy(np.ascontiguousarray(label)).long()


class HelenDataset(Dataset):
    """Samples of one split as ``{"image": (3, H, W) in [0, 1], "mask": (H, W) int64, "id": str}``.

    Args:
        samples: from :func:`portraitseg.data.layouts.discover`.
        transform: an albumentations-style callable ``transform(image=, mask=) -> dict``.
        skip_bad: replace an unreadable sample by the next good one (each skipped file is
            logged once) instead of raising.
        keep_original: also return the untransformed label as ``"orig_mask"`` (for evaluation
            at the dataset's native resolution) and ``"orig_size"`` ``(H, W)``.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        transform: Transform | None = None,
        skip_bad: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        num_classes: int = NUM_CLASSES,
        keep_original: bool = False,
    ) -> None:
        if not samples:
            raise ValueError("empty split: no samples to load")
        self.samples = list(samples)
        self.transform = transform
        self.skip_bad = skip_bad
        self.max_pixels = max_pixels
        self.num_classes = num_classes
        self.keep_original = keep_original
        self._bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict:
        for offset in range(len(self.samples)):
            i = (index + offset) % len(self.samples)
            if i in self._bad:
                continue
            try:
                image, label = load_sample(self.samples[i], self.max_pixels, self.num_classes)
            except InputError as err:
                if not self.skip_bad:
                    raise
                self._bad.add(i)
                log.warning("skipping bad sample (skip_bad=true): %s", err)
                continue
            return self._item(self.samples[i], image, label)
        raise InputError("skip_bad=true but every sample of the split is unreadable")

    def _item(self, sample: Sample, image: np.ndarray, label: np.ndarray) -> dict:
        item: dict = {"id": sample.id}
        if self.keep_original:
            item["orig_mask"] = torch.from_numpy(label).long()
            item["orig_size"] = torch.tensor(label.shape)
        if self.transform is not None:
            out = self.transform(image=image, mask=label)
            image, label = out["image"], out["mask"]
            if "valid_size" in out:
                item["valid_size"] = torch.tensor(out["valid_size"])
        item["image"], item["mask"] = to_tensors(image, label)
        return item


def collate(batch: list[dict]) -> dict:
    """Stack tensors of equal shape; keep lists for ids and native-size labels."""
    out: dict = {}
    for key in batch[0]:
        values = [b[key] for b in batch]
        same = all(isinstance(v, torch.Tensor) and v.shape == values[0].shape for v in values)
        out[key] = torch.stack(values) if same else values
    return out
