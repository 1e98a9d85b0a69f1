"""Segmentation models: a registry of encoder + head combinations behind one contract."""

from portraitseg.models.heads import FCNHead
from portraitseg.models.pretrained import PretrainedWeightsError
from portraitseg.models.registry import MODELS, create_model
from portraitseg.models.segmenter import Segmenter

__all__ = ["MODELS", "FCNHead", "PretrainedWeightsError", "Segmenter", "create_model"]
