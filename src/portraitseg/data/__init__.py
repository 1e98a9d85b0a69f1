"""Data layer: layouts on disk, the dataset, transforms, the datamodule, synthetic data.

Attributes are imported lazily (PEP 562), so ``python -m portraitseg.data synth`` and the
downloader do not pay for importing Lightning and albumentations.
"""

import importlib
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")  # albumentations would query PyPI at import

_EXPORTS = {
    "HelenDataModule": "datamodule",
    "carve_split": "datamodule",
    "HelenDataset": "dataset",
    "collate": "dataset",
    "load_sample": "dataset",
    "MixedDataModule": "mixed",
    "MixedDataset": "mixed",
    "LAYOUTS": "layouts",
    "DatasetNotFoundError": "layouts",
    "Sample": "layouts",
    "detect_layout": "layouts",
    "discover": "layouts",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"portraitseg.data.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
