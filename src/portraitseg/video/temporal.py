"""Steady edges in video: the subject alpha smoothed over time, following motion.

Each frame's alpha is segmented on its own, so where nothing moves it still wobbles by a few
percent from frame to frame (the network sees slightly different pixels: noise, compression),
which shows as shimmering edges. :func:`temporal_blend` is a running average that follows motion:

1. the previous (smoothed) alpha and the previous frame are warped onto this frame by the optical
   flow (``flow``, from :func:`estimate_flow`), so a pan, a zoom or a walking person carries its
   alpha along;
2. where the warped previous frame matches this one (residual below ``threshold``), the alpha is
   ``strength * previous + (1 - strength) * new``; where it does not (the flow is wrong, something
   appeared or was uncovered), the new alpha is taken as it is, so nothing lags behind.

:class:`TemporalSmoother` keeps the previous frame and alpha; :meth:`TemporalSmoother.propagate`
carries the alpha to a frame that was not segmented (the matte every k-th frame). Shapes:
alpha ``(B, 1, h, w)`` on any grid (the pipeline's subject-alpha grid), frames ``(B, 3, H, W)``
in [0, 1], resized here to the alpha's grid.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: defaults of the running average: the share of the previous alpha kept where nothing changed,
#: and the residual (gray level in [0, 1], box-averaged) from which the new alpha replaces it
STRENGTH = 0.7
THRESHOLD = 0.05
#: the box (pixels of the alpha grid) over which the residual is averaged
RESIDUAL_BOX = 5
#: optical flow is estimated at most at this long side, then scaled to the alpha's grid
FLOW_SIZE = 512

_GRAY = (0.299, 0.587, 0.114)


def _check(alpha: torch.Tensor, name: str, channels: int) -> None:
    if not isinstance(alpha, torch.Tensor) or alpha.ndim != 4 or alpha.shape[1] != channels:
        shape = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
        raise ValueError(f"{name}: expected a (B, {channels}, H, W) tensor, got {shape}")


def to_gray(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``frame (B, 3, H, W)`` in [0, 1] -> luma ``(B, 1, h, w)`` at ``size`` (area-averaged)."""
    _check(frame, "frame", 3)
    weights = frame.new_tensor(_GRAY).view(1, 3, 1, 1)
    gray = (frame.float() * weights).sum(1, keepdim=True)
    if tuple(gray.shape[-2:]) != tuple(size):
        gray = F.interpolate(gray, size=size, mode="area")
    return gray


def warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward warp: ``out(p) = x(p + flow(p))``, ``x (B, C, h, w)``, ``flow (B, 2, h, w)`` in
    pixels (dx, dy); bilinear, borders repeated."""
    b, _, h, w = x.shape
    if flow.shape != (b, 2, h, w):
        raise ValueError(f"flow: expected shape {(b, 2, h, w)}, got {tuple(flow.shape)}")
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=flow.dtype),
                            torch.arange(w, device=x.device, dtype=flow.dtype), indexing="ij")
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1).to(x.dtype)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


def estimate_flow(gray: torch.Tensor, previous: torch.Tensor, size: int = FLOW_SIZE) -> torch.Tensor:
    """Optical flow from ``gray`` to ``previous`` (both ``(B, 1, h, w)`` in [0, 1]): ``(B, 2, h, w)``
    in pixels of that grid, such that ``gray(p) ~ previous(p + flow(p))``. OpenCV's DIS flow
    (ultrafast preset) at a long side of at most ``size``, on the CPU."""
    import cv2

    _check(gray, "gray", 1)
    _check(previous, "previous", 1)
    if gray.shape != previous.shape:
        raise ValueError(f"gray {tuple(gray.shape)} and previous {tuple(previous.shape)} differ in shape")
    h, w = gray.shape[-2:]
    scale = min(1.0, size / max(h, w))
    small = (max(1, round(h * scale)), max(1, round(w * scale)))
    pair = torch.cat((gray, previous), 1).float()
    if small != (h, w):
        pair = F.interpolate(pair, size=small, mode="area")
    planes = (pair.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    flows = [dis.calc(np.ascontiguousarray(p[0]), np.ascontiguousarray(p[1]), None) for p in planes]
    flow = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(gray.device)
    if small != (h, w):
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        flow = flow * flow.new_tensor((w / small[1], h / small[0])).view(1, 2, 1, 1)
    return flow


def temporal_blend(
    alpha: torch.Tensor,
    gray: torch.Tensor,
    previous_alpha: torch.Tensor,
    previous_gray: torch.Tensor,
    flow: torch.Tensor | None = None,
    strength: float = STRENGTH,
    threshold: float = THRESHOLD,
) -> torch.Tensor:
    """One step of the motion-gated running average (see the module docstring).

    Args:
        alpha: this frame's alpha ``(B, 1, h, w)`` in [0, 1].
        gray: this frame's luma ``(B, 1, h, w)`` in [0, 1] (:func:`to_gray` at the alpha's grid).
        previous_alpha, previous_gray: the previous frame's smoothed alpha and luma, same shape.
        flow: ``(B, 2, h, w)`` from :func:`estimate_flow` (None: nothing moved).
        strength: share of the previous alpha kept where the frames match, in [0, 1).
        threshold: box-averaged residual at which the new alpha is taken alone, > 0.

    Returns:
        the smoothed alpha ``(B, 1, h, w)``.
    """
    for name, t in (("alpha", alpha), ("gray", gray), ("previous_alpha", previous_alpha),
                    ("previous_gray", previous_gray)):
        _check(t, name, 1)
        if t.shape != alpha.shape:
            raise ValueError(f"{name}: shape {tuple(t.shape)} differs from alpha's {tuple(alpha.shape)}")
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"strength={strength!r} must be in [0, 1)")
    if not threshold > 0.0:
        raise ValueError(f"threshold={threshold!r} must be > 0")
    if flow is not None:
        previous_alpha, previous_gray = warp(torch.cat((previous_alpha, previous_gray), 1), flow).split(1, 1)
    residual = F.avg_pool2d((gray - previous_gray).abs(), RESIDUAL_BOX, stride=1,
                            padding=RESIDUAL_BOX // 2, count_include_pad=False)
    keep = strength * (1.0 - residual / threshold).clamp(0.0, 1.0)
    return torch.lerp(alpha, previous_alpha.to(alpha.dtype), keep.to(alpha.dtype))


class TemporalSmoother(nn.Module):
    """The running average of a clip's alpha (:func:`temporal_blend`), frame after frame.

    Args:
        strength, threshold: see :func:`temporal_blend`; ``strength=0`` passes alphas through.
        motion: follow motion with optical flow (:func:`estimate_flow`); False: plain frame
            difference at each pixel.
    """

    def __init__(self, strength: float = STRENGTH, threshold: float = THRESHOLD, motion: bool = True) -> None:
        super().__init__()
        if not 0.0 <= strength < 1.0:
            raise ValueError(f"strength={strength!r} must be in [0, 1)")
        if not threshold > 0.0:
            raise ValueError(f"threshold={threshold!r} must be > 0")
        self.strength, self.threshold, self.motion = float(strength), float(threshold), bool(motion)
        self.alpha: torch.Tensor | None = None
        self.gray: torch.Tensor | None = None

    def reset(self) -> None:
        """Forget the previous frame (a new clip, or a cut)."""
        self.alpha = self.gray = None

    def _step(self, frame: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor | None]:
        gray = to_gray(frame, size)
        if self.gray is None or self.gray.shape != gray.shape:
            self.reset()
            return gray, None
        flow = estimate_flow(gray, self.gray) if self.motion else None
        return gray, flow

    def forward(self, alpha: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """``alpha (B, 1, h, w)`` of ``frame (B, 3, H, W)`` -> the smoothed alpha ``(B, 1, h, w)``."""
        _check(alpha, "alpha", 1)
        gray, flow = self._step(frame, tuple(alpha.shape[-2:]))
        if self.alpha is not None and self.strength > 0:
            assert self.gray is not None
            alpha = temporal_blend(alpha, gray, self.alpha, self.gray, flow, self.strength, self.threshold)
        self.alpha, self.gray = alpha, gray
        return alpha

    def propagate(self, frame: torch.Tensor) -> torch.Tensor:
        """The previous alpha carried onto ``frame (B, 3, H, W)`` by the flow (a frame that was not
        segmented): ``(B, 1, h, w)``.

        Raises:
            RuntimeError: no frame was segmented before.
        """
        if self.alpha is None or self.gray is None:
            raise RuntimeError("propagate() needs a segmented frame first: call the smoother with an alpha")
        gray = to_gray(frame, tuple(self.alpha.shape[-2:]))
        self.alpha, self.gray = warp(self.alpha, estimate_flow(gray, self.gray)), gray
        return self.alpha


__all__ = ["FLOW_SIZE", "STRENGTH", "THRESHOLD", "TemporalSmoother", "estimate_flow", "temporal_blend",
           "to_gray", "warp"]
