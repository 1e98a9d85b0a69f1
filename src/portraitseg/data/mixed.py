"""Several real sources in one datamodule, each sample carrying the targets its source has.

Two targets exist: the Helen parse (class ids 0..10) and the whole-person matte (soft, [0, 1]).
A source declares which it has; a missing target is *unknown*, never background: its parse is
:data:`IGNORE` (255, skipped by the cross-entropy) and its matte is ``-1`` (skipped by the person
loss and metrics), pixel by pixel, so a zoom-out composite of a CCP photo (matte only) pasted into
a HELEN* photo (both) carries both targets exactly where they are known. One thing is known
without Helen labels: outside the person (matte 0) every pixel is parse background, so a person
matte also teaches the parse head that street scenes, trees and clothes are not faces or hair.
Items carry ``has_parse`` (the source has Helen labels) for the per-source metrics.

A source (``sources.<name>`` in ``conf/data/mixed.yaml``)::

    root: path                 # any layout of portraitseg.data.layouts
    layout: auto               # auto | helenstar | folder | smith
    parse: true                # the layout's label files are Helen class-id maps
    person: person/person_{num}.png   # person matte per image: a template relative to root
                               # ({stem}: image file stem, {num}: its trailing digits), or
                               # "label" (the layout's label file is the person mask), or null
    weight: 1.0                # sampling weight of the source in a training epoch
    val_fraction: 0.1          # carved deterministically from train (0: no val split)
    limit: null                # use at most this many samples (quick runs)
    augment: {}                # overrides of the datamodule's augment for this source
    synthetic: null            # {n, seed, size}: generate the synthetic portraits into root
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler

from portraitseg.classes import NUM_CLASSES
from portraitseg.data.datamodule import carve_split, seed_worker
from portraitseg.data.dataset import collate
from portraitseg.data.layouts import DatasetNotFoundError, discover
from portraitseg.data.transforms import EvalTransform, train_transform
from portraitseg.io import DEFAULT_MAX_PIXELS, InputError, read_image, read_label, read_matte

#: parse value of pixels whose Helen class is unknown (a source without Helen labels)
IGNORE = 255
#: person-matte value of pixels whose person target is unknown
UNKNOWN = -1.0
#: in a source without Helen labels, pixels whose person matte is at most this (of 255) are
#: known to be background for the parse too (Helen's classes are all parts of a person)
BACKGROUND_MATTE = 5


@dataclass(frozen=True)
class TargetSample:
    """One image with the target files its source has (``None``: that target is unknown)."""

    id: str
    source: str
    image: Path
    parse: Path | tuple[Path, ...] | None
    person: Path | None


def person_path(root: Path, template: str, image: Path) -> Path:
    """The person matte of ``image`` under ``root`` by ``template`` ({stem}, {num})."""
    stem = image.stem
    digits = stem[len(stem.rstrip("0123456789")):]
    return root / template.format(stem=stem, num=digits)


def source_samples(name: str, cfg: Mapping[str, Any]) -> dict[str, list[TargetSample]]:
    """List the samples of source ``name`` per split, with the targets it declares.

    Raises ``FileNotFoundError`` naming the first missing person file (a declared ``person``
    template whose folder or file is absent) and ``ValueError`` for a source with no target.
    """
    root = Path(cfg["root"])
    parse, person = bool(cfg.get("parse", True)), cfg.get("person")
    if not parse and not person:
        raise ValueError(f"data.sources.{name}: declares no target (parse: false, person: null)")
    if parse and person == "label":
        raise ValueError(f"data.sources.{name}: person: label makes the label files person masks, so "
                         "they cannot also be Helen class ids; set parse: false")
    try:
        found = discover(root, cfg.get("layout", "auto"))
    except DatasetNotFoundError as err:
        raise DatasetNotFoundError(f"data.sources.{name}.root: {err}") from None
    out: dict[str, list[TargetSample]] = {}
    for split, samples in found.items():
        items = []
        for s in samples:
            matte = None
            if person == "label":
                matte = s.label
            elif person:
                matte = person_path(root, str(person), s.image)
                if not matte.is_file():
                    folder = matte.parent
                    what = "folder" if not folder.is_dir() else "file"
                    raise FileNotFoundError(
                        f"data.sources.{name}: person matte {what} missing for {s.image.name}: "
                        f"expected {matte if what == 'file' else folder} (person: {person!r}; set "
                        f"data.sources.{name}.person=null to train only the parse on this source)"
                    )
            items.append(TargetSample(s.id, name, s.image, s.label if parse else None, matte))
        out[split] = items
    return out


def load_targets(
    sample: TargetSample, max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Decode ``sample``: RGB ``(H, W, 3)`` uint8, parse ``(H, W)`` uint8 (:data:`IGNORE` where
    unknown) and person matte ``(H, W)`` uint8 or ``None`` (unknown).

    Raises :class:`InputError` naming the file whose size differs from the image's or whose
    class ids exceed 0..10.
    """
    image = read_image(sample.image, max_pixels)
    h, w = image.shape[:2]
    parse = np.full((h, w), IGNORE, np.uint8)
    if sample.parse is not None:
        paths = sample.parse if isinstance(sample.parse, tuple) else (sample.parse,)
        maps = [read_label(p, max_pixels) for p in paths]
        label = np.argmax(np.stack(maps), 0).astype(np.uint8) if len(maps) > 1 else maps[0]
        _check_size(paths[0], label, image, sample.image)
        if label.max() >= NUM_CLASSES:
            bad = sorted(int(v) for v in np.unique(label) if v >= NUM_CLASSES)
            raise InputError(f"{paths[0]}: label ids {bad} outside 0..{NUM_CLASSES - 1} "
                             "(labels must be class-id PNGs, pixel value = class id)")
        parse = label
    matte = None
    if sample.person is not None:
        matte = read_matte(sample.person, max_pixels)
        _check_size(sample.person, matte, image, sample.image)
        if sample.parse is None:  # every Helen class is part of a person: outside it, background
            parse[matte <= BACKGROUND_MATTE] = 0
    return image, parse, matte


def _check_size(path: Path, target: np.ndarray, image: np.ndarray, image_path: Path) -> None:
    if target.shape != image.shape[:2]:
        raise InputError(
            f"{path}: is {target.shape[1]}x{target.shape[0]} but its image {image_path.name} is "
            f"{image.shape[1]}x{image.shape[0]} (expected {image.shape[1]}x{image.shape[0]})"
        )


def _tensors(image: np.ndarray, parse: np.ndarray, person: np.ndarray) -> dict[str, torch.Tensor]:
    return {
        "image": torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255),
        "mask": torch.from_numpy(np.ascontiguousarray(parse)).long(),
        "person": torch.from_numpy(np.ascontiguousarray(person, dtype=np.float32))[None],
    }


class _Augment:
    """The per-source albumentations pipelines plus the zoom-out generator, seeded together
    (``set_random_seed`` is what :class:`portraitseg.lit.callbacks.EpochSeeding` calls)."""

    def __init__(self, transforms: Mapping[str, Any]) -> None:
        self.transforms = dict(transforms)
        self.rng = np.random.default_rng()

    def set_random_seed(self, seed: int) -> None:
        for i, t in enumerate(self.transforms.values()):
            if hasattr(t, "set_random_seed"):  # evaluation transforms are deterministic
                t.set_random_seed((seed + 7919 * i) % 2**32)
        self.rng = np.random.default_rng(seed)


class MixedDataset(Dataset):
    """Samples of several sources as ``{"image": (3, S, S) in [0, 1], "mask": (S, S) int64
    (255 = unknown), "person": (1, S, S) float ([0, 1], -1 = unknown), "id", "source",
    "has_parse"}``.

    Training (``train=True``): each source's augmentation, then with probability ``zoom["p"]``
    a zoom-out: the sample is shrunk to a random ``zoom["scale"]`` share of the side (log-uniform)
    and pasted at a random place into another random sample (the canvas), targets alongside, so
    the network sees small faces, whole bodies and several people in one photo. Evaluation: the
    letterbox of :class:`~portraitseg.data.transforms.EvalTransform` (``valid_size`` returned).
    """

    def __init__(
        self,
        samples: list[TargetSample],
        transforms: Mapping[str, Any],
        train: bool,
        zoom: Mapping[str, Any] | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not samples:
            raise ValueError("empty split: no samples to load")
        self.samples = samples
        self.train = train
        self.transform = _Augment(transforms)
        self.zoom = dict(zoom or {})
        self.max_pixels = max_pixels
        p, scale = float(self.zoom.get("p", 0.0)), tuple(self.zoom.get("scale", (0.2, 0.8)))
        if not 0 <= p <= 1 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"zoom: p must be in [0, 1] and scale within (0, 1], got p={p}, scale={scale}")

    def __len__(self) -> int:
        return len(self.samples)

    def _load(self, index: int) -> tuple[dict, np.ndarray, np.ndarray, np.ndarray]:
        sample = self.samples[index]
        image, parse, matte = load_targets(sample, self.max_pixels)
        masks = [matte if matte is not None else np.zeros_like(parse)]
        out = self.transform.transforms[sample.source](image=image, mask=parse, masks=masks)
        parse = out["mask"]
        if sample.parse is None and matte is None:  # geometry padding stays unknown too
            parse = np.full_like(parse, IGNORE)
        person = np.asarray(out["masks"])[0].astype(np.float32) / 255.0
        if matte is None:
            person[:] = UNKNOWN
        meta = {"id": sample.id, "source": sample.source, "has_parse": sample.parse is not None}
        if "valid_size" in out:
            meta["valid_size"] = torch.tensor(out["valid_size"])
        return meta, out["image"], parse, person

    def __getitem__(self, index: int) -> dict:
        meta, image, parse, person = self._load(index)
        rng = self.transform.rng
        if self.train and rng.random() < float(self.zoom.get("p", 0.0)):
            _, c_image, c_parse, c_person = self._load(int(rng.integers(len(self.samples))))
            lo, hi = self.zoom.get("scale", (0.2, 0.8))
            scale = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
            image, parse, person = zoom_out(image, parse, person, c_image, c_parse, c_person, scale, rng)
        return {**meta, **_tensors(image, parse, person)}


def zoom_out(
    image: np.ndarray, parse: np.ndarray, person: np.ndarray,
    canvas: np.ndarray, canvas_parse: np.ndarray, canvas_person: np.ndarray,
    scale: float, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrink ``(image, parse, person)`` by ``scale`` and paste them at a random place of the
    canvas sample (same size), targets alongside. Returns new arrays; inputs are unchanged."""
    h, w = image.shape[:2]
    sh, sw = max(1, round(h * scale)), max(1, round(w * scale))
    y, x = int(rng.integers(h - sh + 1)), int(rng.integers(w - sw + 1))
    out_image, out_parse, out_person = canvas.copy(), canvas_parse.copy(), canvas_person.copy()
    out_image[y : y + sh, x : x + sw] = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
    out_parse[y : y + sh, x : x + sw] = cv2.resize(parse, (sw, sh), interpolation=cv2.INTER_NEAREST)
    small = (cv2.resize(person, (sw, sh), interpolation=cv2.INTER_AREA) if person.min() >= 0
             else np.full((sh, sw), UNKNOWN, np.float32))
    out_person[y : y + sh, x : x + sw] = small
    return out_image, out_parse, out_person


class MixedDataModule(L.LightningDataModule):
    """Train on several sources at once; validate on each source's val split separately.

    Args:
        sources: ``{name: source config}`` (see the module docstring).
        image_size: side of the square network input.
        epoch_size: training samples per epoch, drawn with replacement by source weight
            (``None``: the number of training samples of all sources).
        augment: default keyword arguments of :func:`~portraitseg.data.transforms.train_transform`
            (a source's ``augment`` overrides them).
        zoom: ``{p, scale}`` of the zoom-out augmentation (see :class:`MixedDataset`).
        split_seed: seed of the deterministic val carving.
        limit_val: at most this many val samples per source (``None``: all).

    The val loaders come in the order of ``sources`` (those with a val split); their batches
    carry ``source`` so metrics are logged per source (``val/<source>/<metric>``).
    """

    def __init__(
        self,
        sources: Mapping[str, Mapping[str, Any]],
        image_size: int = 320,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        epoch_size: int | None = None,
        augment: Mapping[str, Any] | None = None,
        zoom: Mapping[str, Any] | None = None,
        split_seed: int = 0,
        limit_val: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__()
        if not sources:
            raise ValueError("data.sources is empty: declare at least one source")
        self.save_hyperparameters(logger=False)
        self.splits: dict[str, dict[str, list[TargetSample]]] = {}
        self._prepared = False

    def prepare_data(self) -> None:
        if self._prepared:  # once per process (Lightning + setup)
            return
        self._prepared = True
        for cfg in self.hparams.sources.values():
            if cfg.get("synthetic"):
                from portraitseg.data.synthetic import ensure_synthetic

                ensure_synthetic(Path(cfg["root"]), **cfg["synthetic"])

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()
        hp = self.hparams
        for name, cfg in hp.sources.items():
            found = source_samples(name, cfg)
            fraction = float(cfg.get("val_fraction", 0.1))
            if "train" in found and "val" not in found and fraction > 0:
                found["train"], found["val"] = carve_split(found["train"], fraction, hp.split_seed)
            if cfg.get("limit"):
                found = {k: v[: int(cfg["limit"])] for k, v in found.items()}
            if hp.limit_val and "val" in found:
                found["val"] = found["val"][: hp.limit_val]
            self.splits[name] = found

    @property
    def val_names(self) -> list[str]:
        """Names of the sources with a val split, in loader order."""
        self.setup()
        return [n for n, s in self.splits.items() if s.get("val")]

    def _transforms(self, train: bool) -> dict[str, Any]:
        hp = self.hparams
        out = {}
        for name, cfg in hp.sources.items():
            if train:
                aug = {**dict(hp.augment or {}), **dict(cfg.get("augment") or {})}
                out[name] = train_transform(hp.image_size, num_classes=NUM_CLASSES, **aug)
            else:
                out[name] = EvalTransform(hp.image_size)
        return out

    def _loader(self, dataset: Dataset, batch_size: int, sampler: Any = None) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, shuffle=False,
            drop_last=sampler is not None, num_workers=hp.num_workers, pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0, collate_fn=collate,
            worker_init_fn=seed_worker if hp.num_workers > 0 else None,
        )

    def train_dataset(self) -> MixedDataset:
        self.setup()
        samples = [s for split in self.splits.values() for s in split.get("train", [])]
        return MixedDataset(samples, self._transforms(True), True, self.hparams.zoom, self.hparams.max_pixels)

    def sample_weights(self) -> torch.Tensor:
        """Per-sample sampling weight: the source's weight shared by its training samples."""
        self.setup()
        weights = []
        for name, split in self.splits.items():
            n = len(split.get("train", []))
            w = float(self.hparams.sources[name].get("weight", 1.0))
            if w < 0:
                raise ValueError(f"data.sources.{name}.weight must be >= 0, got {w}")
            weights += [w / max(n, 1)] * n
        return torch.tensor(weights, dtype=torch.double)

    def train_dataloader(self) -> DataLoader:
        dataset = self.train_dataset()
        weights = self.sample_weights()
        if not weights.sum() > 0:
            raise ValueError("every data.sources.<name>.weight is 0: nothing to train on")
        n = self.hparams.epoch_size or len(dataset)
        sampler = WeightedRandomSampler(weights, num_samples=n, replacement=True)
        return self._loader(dataset, self.hparams.batch_size, sampler)

    def val_dataloader(self) -> list[DataLoader]:
        transforms = self._transforms(False)
        size = self.hparams.eval_batch_size or self.hparams.batch_size
        return [
            self._loader(MixedDataset(self.splits[n]["val"], transforms, False,
                                      max_pixels=self.hparams.max_pixels), size)
            for n in self.val_names
        ]

