"""Steady edges in video: the subject alpha smoothed over time, following motion.

Each frame's alpha is segmented on its own, so where nothing moves it still wobbles by a few
percent from frame to frame (the network sees slightly different pixels: noise, compression),
which shows as shimmering edges. :func:`temporal_blend` is a running average that follows motion:

1. the previous (smoothed) alpha and the previous frame are warped onto this frame by the optical
   flow (``flow``, from :func:`estimate_flow`), so a pan, a zoom or a walking person carries its
   alpha along;
2. where the warped previous frame matches this one (residual below ``threshold``, above the
   frame's noise level: its median residual), the alpha is ``strength * previous + (1 - strength) *
   new``; where it does not (the flow is wrong, something appeared or was uncovered), the new alpha
   is taken as it is.

A running average still trails a moving edge where the picture changes little (dark clothes over a
dark background). A clip is rendered with one frame of delay, so the next frame's alpha is known
too: :meth:`TemporalSmoother.look_ahead` blends it in, carried back by the flow (share ``ahead``
where the frames match), which centres the average on the frame and takes the lag away.

:class:`TemporalSmoother` keeps the previous frame and alpha; :meth:`TemporalSmoother.propagate`
carries the alpha to a frame that was not segmented (the matte every k-th frame). Shapes:
alpha ``(B, 1, h, w)`` on any grid (the pipeline's subject-alpha grid), frames ``(B, 3, H, W)``
in [0, 1]. The flow and the residual that gates the average are smooth maps: the smoother works
them out on the frame at a long side of at most :data:`FLOW_SIZE` (:func:`gate_grid`) and resizes
them to the alpha's grid, where only the alpha itself is warped and blended.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from portraitseg.render.guided import box_mean
from portraitseg.video import STRENGTH

#: the running average's default residual (level in [0, 1] of the most-changed colour channel,
#: box-averaged, above the noise) from which the new alpha replaces the previous one (the share kept
#: where nothing changed: :data:`~portraitseg.video.STRENGTH`)
THRESHOLD = 0.05
#: the share of the next frame's alpha blended in where it matches (:meth:`TemporalSmoother.look_ahead`)
AHEAD = 0.25
#: the box (pixels of the frame's grid) over which the residual is averaged
RESIDUAL_BOX = 5
#: the noise level (the residual's median) is taken over every this-many-th pixel
NOISE_STRIDE = 7
#: how much smaller the residual after the flow must be for the moved alpha to be
#: used: on flat areas a wrong flow matches as well as none, and the alpha stays in place
FLOW_MARGIN = 0.01
#: the flow and the residual are worked out at most at this long side, then resized to the alpha's grid
FLOW_SIZE = 512

_GRAY = (0.299, 0.587, 0.114)


def _check(alpha: torch.Tensor, name: str, channels: int) -> None:
    if not isinstance(alpha, torch.Tensor) or alpha.ndim != 4 or alpha.shape[1] != channels:
        shape = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
        raise ValueError(f"{name}: expected a (B, {channels}, H, W) tensor, got {shape}")


def gate_grid(size: tuple[int, int], limit: int = FLOW_SIZE) -> tuple[int, int]:
    """The grid ``(h, w)`` of a ``size`` grid scaled to a long side of at most ``limit``."""
    h, w = size
    scale = min(1.0, limit / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def to_grid(frame: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``frame (B, 3, H, W)`` in [0, 1] -> a new ``(B, 3, h, w)`` float32 tensor at ``size``
    (area-averaged; a copy at the same size, so that rendering ``frame`` in place leaves it)."""
    _check(frame, "frame", 3)
    if tuple(frame.shape[-2:]) == tuple(size):
        return frame.to(torch.float32, copy=True)
    return F.interpolate(frame.float(), size=size, mode="area")


def _resize(x: torch.Tensor, size: tuple[int, int], flow: bool = False) -> torch.Tensor:
    """Maps ``(B, C, h, w)`` resized bilinearly to ``size``; with ``flow``, the first two channels
    are a flow whose vectors are scaled with it."""
    h, w = x.shape[-2:]
    if (h, w) == tuple(size):
        return x
    out = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    if flow:
        out[:, :2] *= out.new_tensor((size[1] / w, size[0] / h)).view(1, 2, 1, 1)
    return out


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
    small = gate_grid((h, w), size)
    pair = torch.cat((gray, previous), 1).float()
    if small != (h, w):
        pair = F.interpolate(pair, size=small, mode="area")
    planes = (pair.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST)
    flows = [dis.calc(np.ascontiguousarray(p[0]), np.ascontiguousarray(p[1]), None) for p in planes]
    return _resize(torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).to(gray.device), (h, w), flow=True)


def _residual(frame: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Box-averaged absolute difference of two frames ``(B, C, h, w)``, its largest channel
    ``(B, 1, h, w)`` (a change of colour at equal brightness counts), less its median over the
    frame (the noise of the sensor and the codec, present where nothing changed), floored at 0."""
    diff = box_mean((frame - previous).abs(), RESIDUAL_BOX // 2).amax(1, keepdim=True)
    noise = diff.flatten(1)[:, ::NOISE_STRIDE].median(dim=1).values.view(-1, 1, 1, 1)
    return (diff - noise).clamp_(min=0.0)


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
        frame: this frame ``(B, C, h', w')`` in [0, 1], on the alpha's grid or a coarser one
            (:func:`to_grid` at :func:`gate_grid`), where the residual is worked out.
        previous_alpha: the previous frame's smoothed alpha ``(B, 1, h, w)``.
        previous_frame: the previous frame ``(B, C, h', w')``, on the grid of ``frame``.
        flow: ``(B, 2, h', w')`` on the frame's grid from :func:`estimate_flow`, or None (no
            motion compensation).
        strength: share of the previous alpha kept where the frames match, in [0, 1).
        threshold: box-averaged residual at which the new alpha is taken alone, > 0.

    Returns:
        the smoothed alpha ``(B, 1, h, w)``.
    """
    for name, t in (("alpha", alpha), ("previous_alpha", previous_alpha)):
        _check(t, name, 1)
    if previous_alpha.shape != alpha.shape:
        raise ValueError(f"previous_alpha: shape {tuple(previous_alpha.shape)} differs from alpha's "
                         f"{tuple(alpha.shape)}")
    if frame.ndim != 4 or frame.shape[0] != alpha.shape[0]:
        raise ValueError(f"frame: expected a (B, C, H, W) tensor with alpha's batch {alpha.shape[0]}, "
                         f"got {tuple(frame.shape)}")
    if previous_frame.shape != frame.shape:
        raise ValueError(f"previous_frame: shape {tuple(previous_frame.shape)} differs from frame's "
                         f"{tuple(frame.shape)}")
    if flow is not None and flow.shape != (frame.shape[0], 2, *frame.shape[-2:]):
        raise ValueError(f"flow: expected shape {(frame.shape[0], 2, *frame.shape[-2:])} (the frame's "
                         f"grid), got {tuple(flow.shape)}")
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"strength={strength!r} must be in [0, 1)")
    if not threshold > 0.0:
        raise ValueError(f"threshold={threshold!r} must be > 0")
    grid = tuple(alpha.shape[-2:])
    previous_alpha = previous_alpha.to(alpha.dtype)
    residual = _residual(frame, previous_frame)
    if flow is None:
        keep = strength * (1.0 - residual / threshold).clamp(0.0, 1.0)
        return torch.lerp(alpha, previous_alpha, _resize(keep, grid).to(alpha.dtype))
    # the previous alpha carried by the flow where that fits this frame better
    moved_residual = _residual(frame, warp(previous_frame, flow))
    better = moved_residual < residual - FLOW_MARGIN
    residual = torch.where(better, moved_residual, residual)
    keep = strength * (1.0 - residual / threshold).clamp(0.0, 1.0)
    maps = _resize(torch.cat((flow, better.to(flow.dtype), keep.to(flow.dtype)), 1), grid, flow=True)
    moved = warp(previous_alpha, maps[:, :2].to(alpha.dtype))
    previous_alpha = torch.lerp(previous_alpha, moved, maps[:, 2:3].to(alpha.dtype))
    return torch.lerp(alpha, previous_alpha, maps[:, 3:4].to(alpha.dtype))


class TemporalSmoother(nn.Module):
    """The running average of a clip's alpha (:func:`temporal_blend`), frame after frame.

    Args:
        strength, threshold: see :func:`temporal_blend`; ``strength=0`` passes alphas through.
        motion: follow motion with optical flow (:func:`estimate_flow`); False: plain frame
            difference at each pixel.
        ahead: share of the next frame's alpha that :meth:`look_ahead` blends in, in [0, 1)
            (0: none).
    """

    def __init__(self, strength: float = STRENGTH, threshold: float = THRESHOLD, motion: bool = True,
                 ahead: float = AHEAD) -> None:
        super().__init__()
        for name, value in (("strength", strength), ("ahead", ahead)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}={value!r} must be in [0, 1)")
        if not threshold > 0.0:
            raise ValueError(f"threshold={threshold!r} must be > 0")
        self.strength, self.threshold, self.motion = float(strength), float(threshold), bool(motion)
        self.ahead = float(ahead) if strength > 0 else 0.0
        self.alpha: torch.Tensor | None = None
        self.frame: torch.Tensor | None = None  # the newest frame at the gate grid
        self.before: torch.Tensor | None = None  # the frame before it
        self.raw: torch.Tensor | None = None  # the newest frame's alpha as segmented (None: carried)

    def reset(self) -> None:
        """Forget the previous frames (a new clip, or a cut)."""
        self.alpha = self.frame = self.before = self.raw = None

    def forward(self, alpha: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
        """``alpha (B, 1, h, w)`` of ``frame (B, 3, H, W)`` -> the smoothed alpha ``(B, 1, h, w)``."""
        _check(alpha, "alpha", 1)
        small = to_grid(frame, gate_grid(tuple(alpha.shape[-2:])))
        previous = self.frame
        if (previous is not None and previous.shape == small.shape and self.alpha is not None
                and self.alpha.shape == alpha.shape and self.strength > 0):
            flow = estimate_flow(luma(small), luma(previous)) if self.motion else None
            smoothed = temporal_blend(alpha, small, self.alpha, previous, flow, self.strength, self.threshold)
        else:
            smoothed = alpha
        self.raw, self.before = alpha, previous
        self.alpha, self.frame = smoothed, small
        return smoothed

    def look_ahead(self, alpha: torch.Tensor) -> torch.Tensor:
        """The frame before the newest one, final: its smoothed ``alpha (B, 1, h, w)`` (what this
        smoother returned for it) with the newest frame's alpha as segmented blended in, carried
        back by the flow, with share ``ahead`` where the two frames match (:func:`temporal_blend`
        run backwards in time). Unchanged after a cut, a carried frame or with ``ahead=0``."""
        _check(alpha, "alpha", 1)
        before, raw = self.before, self.raw
        if (self.ahead == 0 or before is None or raw is None or self.frame is None
                or raw.shape != alpha.shape or before.shape != self.frame.shape):
            return alpha
        flow = estimate_flow(luma(before), luma(self.frame)) if self.motion else None
        return temporal_blend(alpha, before, raw, self.frame, flow, self.ahead, self.threshold)

    def propagate(self, frame: torch.Tensor) -> torch.Tensor:
        """The previous alpha carried onto ``frame (B, 3, H, W)`` by the flow (a frame that was not
        segmented): ``(B, 1, h, w)``.

        Raises:
            RuntimeError: no frame was segmented before.
        """
        if self.alpha is None or self.frame is None:
            raise RuntimeError("propagate() needs a segmented frame first: call the smoother with an alpha")
        grid = tuple(self.alpha.shape[-2:])
        small = to_grid(frame, gate_grid(grid))
        flow = _resize(estimate_flow(luma(small), luma(self.frame)), grid, flow=True)
        self.alpha = warp(self.alpha, flow.to(self.alpha.dtype))
        self.before, self.frame, self.raw = self.frame, small, None
        return self.alpha


__all__ = ["AHEAD", "FLOW_MARGIN", "FLOW_SIZE", "STRENGTH", "THRESHOLD", "TemporalSmoother",
           "estimate_flow", "gate_grid", "luma", "temporal_blend", "to_grid", "warp"]
