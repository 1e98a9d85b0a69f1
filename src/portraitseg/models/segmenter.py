"""The segmenter contract every model follows: ``[0, 1]`` image in, logits at input size out."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Segmenter(nn.Module):
    """Wraps a network so callers need not know its normalization or size constraints.

    ``forward(image)``: image ``(B, 3, H, W)`` float in [0, 1], any ``H, W`` -> class logits
    ``(B, K, H, W)``. ``segment(image)`` returns ``(class logits, person logit)``, the person
    logit ``(B, 1, H, W)`` (sigmoid -> whole-person matte) or ``None`` without a person head; both
    come from one pass of the network. The input is normalized with the encoder's mean/std,
    padded (reflect) to a multiple of ``stride`` and the outputs cropped back.

    Args:
        net: maps a normalized ``(B, 3, H', W')`` batch to ``(B, K + P, H', W')`` logits
            (``P = 1`` with a person head: its last channel).
        classes: ``K``.
        mean, std: the encoder's input normalization (RGB, for [0, 1] inputs).
        stride: the network's output stride; inputs are padded to a multiple of it.
        person_head: the net's last output channel is the person-matte logit.
    """

    def __init__(
        self,
        net: nn.Module,
        classes: int,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        stride: int = 32,
        person_head: bool = False,
    ) -> None:
        super().__init__()
        self.net = net
        self.classes = classes
        self.stride = stride
        self.person_head = person_head
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``(B, 3, H, W)`` in [0, 1] -> class logits ``(B, K, H, W)``."""
        return self.segment(image)[0]

    def segment(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Image ``(B, 3, H, W)`` in [0, 1] -> ``(class logits (B, K, H, W), person logit
        (B, 1, H, W) or None)``."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(f"image must be float in [0, 1], got {image.dtype}")
        h, w = image.shape[-2:]
        x = (image - self.mean.to(image.dtype)) / self.std.to(image.dtype)
        pad_h, pad_w = -h % self.stride, -w % self.stride
        if pad_h or pad_w:
            mode = "reflect" if pad_h < h and pad_w < w else "replicate"
            x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
        logits = self.net(x)
        if isinstance(logits, dict):  # torchvision segmentation models
            logits = logits["out"]
        logits = logits[..., :h, :w]
        if not self.person_head:
            return logits, None
        return logits[:, : self.classes], logits[:, self.classes :]
