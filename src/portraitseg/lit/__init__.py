"""Lightning training: the SegmentationModule, Helen metrics and LR schedules."""

from portraitseg.lit.metrics import HelenMetrics, scores_from_confusion
from portraitseg.lit.module import SegmentationModule

__all__ = ["HelenMetrics", "SegmentationModule", "scores_from_confusion"]
