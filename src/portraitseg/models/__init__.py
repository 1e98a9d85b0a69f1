"""Segmentation models: a registry of encoder + head combinations behind one contract.

Attributes are imported lazily (PEP 562), so ``python -m portraitseg.models.checkpoint`` runs its
module once (no runpy warning) and importing one of them does not import the others.
"""

import importlib

_EXPORTS = {
    "CheckpointError": "checkpoint",
    "default_model_path": "checkpoint",
    "export_weights": "checkpoint",
    "load_segmenter": "checkpoint",
    "FCNHead": "heads",
    "PretrainedWeightsError": "pretrained",
    "MODELS": "registry",
    "create_model": "registry",
    "Segmenter": "segmenter",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f"portraitseg.models.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
