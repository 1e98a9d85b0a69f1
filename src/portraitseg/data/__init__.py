"""Data layer: layouts on disk, the dataset, transforms, the datamodule, synthetic data."""

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would query PyPI at import

from portraitseg.data.datamodule import HelenDataModule, carve_split  # noqa: E402
from portraitseg.data.dataset import HelenDataset, collate, load_sample  # noqa: E402
from portraitseg.data.layouts import (  # noqa: E402
    LAYOUTS,
    DatasetNotFoundError,
    Sample,
    detect_layout,
    discover,
)

__all__ = [
    "LAYOUTS",
    "DatasetNotFoundError",
    "HelenDataModule",
    "HelenDataset",
    "Sample",
    "carve_split",
    "collate",
    "detect_layout",
    "discover",
    "load_sample",
]
