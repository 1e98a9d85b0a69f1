"""HelenDataModule: one LightningDataModule for every layout (and the synthetic data)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from portraitseg.classes import NUM_CLASSES
from portraitseg.data.dataset import HelenDataset, collate
from portraitseg.data.layouts import DatasetNotFoundError, Sample, discover, read_pair_list
from portraitseg.data.transforms import EvalTransform, train_transform
from portraitseg.io import DEFAULT_MAX_PIXELS, InputError


def seed_worker(worker_id: int) -> None:
    """DataLoader worker init: seed torch/numpy/random (Lightning's) and the albumentations
    pipeline from the worker's seed, so workers do not repeat one augmentation sequence."""
    from lightning.fabric.utilities.seed import pl_worker_init_function

    pl_worker_init_function(worker_id)
    info = torch.utils.data.get_worker_info()
    transform = getattr(info.dataset, "transform", None)
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(info.seed % 2**32)


def carve_split(
    samples: list[Sample], fraction: float, seed: int
) -> tuple[list[Sample], list[Sample]]:
    """Split ``samples`` into (train, val) deterministically: same inputs, same split."""
    if not 0 < fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {fraction}")
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(len(samples) * fraction))
    val_idx = set(order[:n_val])
    train = [s for i, s in enumerate(samples) if i not in val_idx]
    val = [s for i, s in enumerate(samples) if i in val_idx]
    return train, val


class HelenDataModule(L.LightningDataModule):
    """Train/val/test loaders for a Helen-style dataset.

    Args:
        root: dataset root (any layout of :mod:`portraitseg.data.layouts`).
        layout: ``auto`` or a layout name.
        image_size: side of the square network input (images are letterboxed to it).
        val_fraction, split_seed: carve a val split from train where the layout has none.
        train_list: optional pair list (``"<image> <label>"``, relative to ``root``) replacing the
            layout's train split, e.g. ``sample40.txt``.
        augment: keyword arguments of :func:`portraitseg.data.transforms.train_transform`.
        synthetic: if given (``{n, seed, size}``), generate the synthetic portraits into ``root``
            on first use.
        skip_bad: skip unreadable samples (each logged) instead of failing.
        limit: use at most this many samples per split (quick runs).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        layout: str = "auto",
        image_size: int = 256,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        pin_memory: bool = False,
        persistent_workers: bool = True,
        val_fraction: float = 0.1,
        split_seed: int = 0,
        train_list: str | None = None,
        augment: Mapping[str, Any] | None = None,
        synthetic: Mapping[str, Any] | None = None,
        num_classes: int = NUM_CLASSES,
        skip_bad: bool = False,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        limit: int | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(logger=False)
        self.root = Path(root)
        self.splits: dict[str, list[Sample]] = {}
        self._prepared = False

    def prepare_data(self) -> None:
        if self.hparams.synthetic and not self._prepared:  # once per process (Lightning + setup)
            from portraitseg.data.synthetic import ensure_synthetic

            ensure_synthetic(self.root, **self.hparams.synthetic)
            self._prepared = True

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.prepare_data()  # idempotent; covers users calling setup() directly
        hp = self.hparams
        try:
            found = discover(self.root, hp.layout)
            if hp.train_list:
                found["train"] = read_pair_list(self._train_list(), self.root)
        except DatasetNotFoundError:
            raise
        except (ValueError, FileNotFoundError) as err:  # a malformed list line, a missing file: named
            raise InputError(str(err)) from None
        if "train" in found and "val" not in found:
            found["train"], found["val"] = carve_split(found["train"], hp.val_fraction, hp.split_seed)
        if "test" not in found and "val" in found:
            found["test"] = found["val"]
        self.splits = {k: v[: hp.limit] if hp.limit else v for k, v in found.items()}

    def _train_list(self) -> Path:
        path = self.root / self.hparams.train_list
        if not path.is_file():
            raise DatasetNotFoundError(
                f"data.train_list={self.hparams.train_list}: {path} is not a file; pass a list of "
                "'<image> <label>' lines relative to data.root (e.g. data.train_list=sample40.txt), "
                "or data.train_list=null for the layout's train split")
        return path

    def dataset(self, split: str, train: bool = False, keep_original: bool = False) -> HelenDataset:
        """The dataset of ``split`` with the training or the evaluation transform."""
        self.setup()
        if split not in self.splits:
            raise KeyError(f"split {split!r} not found in {self.root}; have {sorted(self.splits)}")
        hp = self.hparams
        transform = (
            train_transform(hp.image_size, num_classes=hp.num_classes, **(hp.augment or {}))
            if train
            else EvalTransform(hp.image_size)
        )
        return HelenDataset(
            self.splits[split], transform, hp.skip_bad, hp.max_pixels, hp.num_classes, keep_original
        )

    def _loader(self, split: str, train: bool, keep_original: bool = False) -> DataLoader:
        hp = self.hparams
        return DataLoader(
            self.dataset(split, train, keep_original),
            batch_size=hp.batch_size if train else (hp.eval_batch_size or hp.batch_size),
            shuffle=train,
            drop_last=train and len(self.splits[split]) > hp.batch_size,
            num_workers=hp.num_workers,
            pin_memory=hp.pin_memory,
            persistent_workers=hp.persistent_workers and hp.num_workers > 0,
            collate_fn=collate,
            worker_init_fn=seed_worker if hp.num_workers > 0 else None,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False, keep_original=True)
