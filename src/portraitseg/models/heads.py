"""Segmentation heads smp lacks: the classic FCN head (optionally FCN-16s with a skip)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FCNHead(nn.Module):
    """FCN head: 3x3 conv to ``in/4`` channels, BN, ReLU, dropout 0.1, 1x1 conv to classes.

    With ``skip_channels`` (FCN-16s) a 1x1 score of the stride-16 feature is added to the
    2x-upsampled score of the stride-32 feature.

    Args:
        in_channels: channels of the deepest encoder feature.
        classes: number of output classes ``K``.
        skip_channels: channels of the stride-16 feature, or ``None`` for plain FCN-32s.
    """

    def __init__(
        self, in_channels: int, classes: int, skip_channels: int | None = None, dropout: float = 0.1
    ) -> None:
        super().__init__()
        mid = max(in_channels // 4, 1)
        self.block = nn.Sequential(
            nn.Conv2d(in_channels, mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(mid, classes, 1),
        )
        self.skip = nn.Conv2d(skip_channels, classes, 1) if skip_channels else None

    def forward(self, features: list[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
        """Encoder features (last = deepest) -> logits ``(B, K, *size)``."""
        score = self.block(features[-1])
        if self.skip is not None:
            skip = features[-2]
            score = F.interpolate(score, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            score = score + self.skip(skip)
        return F.interpolate(score, size=size, mode="bilinear", align_corners=False)


class EncoderHead(nn.Module):
    """An smp encoder followed by a head taking its feature list."""

    def __init__(self, encoder: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x), x.shape[-2:])
