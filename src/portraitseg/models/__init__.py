"""Segmentation models: a registry of encoder + head combinations behind one contract."""

from portraitseg.models.checkpoint import (
    CheckpointError,
    default_model_path,
    export_weights,
    load_segmenter,
)
from portraitseg.models.heads import FCNHead
from portraitseg.models.pretrained import PretrainedWeightsError
from portraitseg.models.registry import MODELS, create_model
from portraitseg.models.segmenter import Segmenter

__all__ = [
    "MODELS",
    "CheckpointError",
    "FCNHead",
    "PretrainedWeightsError",
    "Segmenter",
    "create_model",
    "default_model_path",
    "export_weights",
    "load_segmenter",
]
