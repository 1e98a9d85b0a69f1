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
#: and the residual (level in [0, 1] of the most-changed colour channel, box-averaged) from which
#: the new alpha replaces it
STRENGTH = 0.7
THRESHOLD = 0.05
#: the box (pixels of the alpha grid) over which the residual is averaged
RESIDUAL_BOX = 5
#: how much smaller the residual after the flow must be for the moved alpha to be
#: used: on flat areas a wrong flow matches as well as none, and the alpha stays in place
FLOW_MARGIN = 0.01
#: optical flow is estimated at most at this long side, then scaled to the alpha's grid
FLOW_SIZE = 512

_GRAY = (0.299, 0.587, 0.114)


def _check(alpha: torch.Tensor, name: str, channels: int) -> None:
    if not isinstance(alpha, torch.Tensor) or alpha.ndim != 4 or alpha.shape[1] != channels:
        shape = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
        raise ValueError(f"{name}: expected a (B, {channels}, H, W) tensor, got {shape}")


def to_grid(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``frame (B, 3, H, W)`` in [0, 1] -> ``(B, 3, h, w)`` float32 at ``size`` (area-averaged)."""
    _check(frame, "frame", 3)
    frame = frame.float()
    return frame if tuple(frame.shape[-2:]) == tuple(size) else F.interpolate(frame, size=size, mode="area")


def luma(frame: torch.Tensor) -> torch.Tensor:
    """``(B, 3, h, w)`` RGB -> ``(B, 1, h, w)`` luma (Rec. 601 weights)."""
    _check(frame, "frame", 3)
    return (frame * frame.new_tensor(_GRAY).view(1, 3, 1, 1)).sum(1, keepdim=True)


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


def _residual(frame: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Box-averaged absolute difference of two frames ``(B, C, h, w)``, its largest channel
    ``(B, 1, h, w)`` (a change of colour at equal brightness counts)."""
    diff = F.avg_pool2d((frame - previous).abs(), RESIDUAL_BOX, stride=1, padding=RESIDUAL_BOX // 2,
                        count_include_pad=False)
    return diff.amax(1, keepdim=True)


def temporal_blend(
    alpha: torch.Tensor,
    frame: torch.Tensor,
    previous_alpha: torch.Tensor,
    previous_frame: torch.Tensor,
    flow: torch.Tensor | None = None,
    strength: float = STRENGTH,
    threshold: float = THRESHOLD,
) -> torch.Tensor:
    """One step of the motion-gated running average (see the module docstring).

    Args:
        alpha: this frame's alpha ``(B, 1, h, w)`` in [0, 1].
        frame: this frame ``(B, C, h, w)`` in [0, 1] at the alpha's grid (:func:`to_grid`).
        previous_alpha, previous_frame: the previous frame's smoothed alpha and its frame.
        flow: ``(B, 2, h, w)`` from :func:`estimate_flow`, or None (no motion compensation).
        strength: share of the previous alpha kept where the frames match, in [0, 1).
        threshold: box-averaged residual at which the new alpha is taken alone, > 0.

    Returns:
        the smoothed alpha ``(B, 1, h, w)``.
    """
    for name, t in (("alpha", alpha), ("previous_alpha", previous_alpha)):
        _check(t, name, 1)
    for name, t in (("previous_alpha", previous_alpha), ("frame", frame), ("previous_frame", previous_frame)):
        if t.ndim != 4 or t.shape[-2:] != alpha.shape[-2:] or t.shape[0] != alpha.shape[0]:
            raise ValueError(f"{name}: shape {tuple(t.shape)} does not match alpha's {tuple(alpha.shape)} "
                             "(same batch and grid)")
    if frame.shape != previous_frame.shape:
        raise ValueError(f"previous_frame: shape {tuple(previous_frame.shape)} differs from frame's "
                         f"{tuple(frame.shape)}")
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"strength={strength!r} must be in [0, 1)")
    if not threshold > 0.0:
        raise ValueError(f"threshold={threshold!r} must be > 0")
    residual = _residual(frame, previous_frame)
    if flow is not None:  # the previous alpha carried by the flow where that fits this frame better
        moved = warp(torch.cat((previous_alpha.to(frame.dtype), previous_frame), 1), flow)
        moved_residual = _residual(frame, moved[:, 1:])
        better = moved_residual < residual - FLOW_MARGIN
        previous_alpha = torch.where(better, moved[:, :1].to(previous_alpha.dtype), previous_alpha)
        residual = torch.where(better, moved_residual, residual)
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
        self.frame: torch.Tensor | None = None  # the previous frame at the alpha's grid

    def reset(self) -> None:
        """Forget the previous frame (a new clip, or a cut)."""
        self.alpha = self.frame = None

    def forward(self, alpha: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """``alpha (B, 1, h, w)`` of ``frame (B, 3, H, W)`` -> the smoothed alpha ``(B, 1, h, w)``."""
        _check(alpha, "alpha", 1)
        small = to_grid(frame, tuple(alpha.shape[-2:]))
        previous = self.frame
        if previous is not None and previous.shape == small.shape and self.strength > 0:
            assert self.alpha is not None
            flow = estimate_flow(luma(small), luma(previous)) if self.motion else None
            alpha = temporal_blend(alpha, small, self.alpha, previous, flow, self.strength, self.threshold)
        self.alpha, self.frame = alpha, small
        return alpha

    def propagate(self, frame: torch.Tensor) -> torch.Tensor:
        """The previous alpha carried onto ``frame (B, 3, H, W)`` by the flow (a frame that was not
        segmented): ``(B, 1, h, w)``.

        Raises:
            RuntimeError: no frame was segmented before.
        """
        if self.alpha is None or self.frame is None:
            raise RuntimeError("propagate() needs a segmented frame first: call the smoother with an alpha")
        small = to_grid(frame, tuple(self.alpha.shape[-2:]))
        self.alpha = warp(self.alpha, estimate_flow(luma(small), luma(self.frame)).to(self.alpha.dtype))
        self.frame = small
        return self.alpha


__all__ = ["FLOW_MARGIN", "FLOW_SIZE", "STRENGTH", "THRESHOLD", "TemporalSmoother", "estimate_flow",
           "luma", "temporal_blend", "to_grid", "warp"]
