"""A clip through the pipeline, frame by frame: :func:`render_clip`.

Each frame runs the pipeline's own steps (:meth:`~portraitseg.pipeline.PortraitPipeline.parse`,
:meth:`~portraitseg.pipeline.PortraitPipeline.subject_alpha`,
:meth:`~portraitseg.pipeline.PortraitPipeline.render`); between them the subject alpha goes
through a :class:`~portraitseg.video.temporal.TemporalSmoother`. With ``every=k`` only every k-th
frame is segmented and the alpha is carried to the others by the optical flow; every frame is
rendered.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from portraitseg.pipeline import stack_images, to_uint8
from portraitseg.video.io import DEFAULT_CRF, ClipWriter, VideoError, open_clip, packets
from portraitseg.video.temporal import TemporalSmoother

if TYPE_CHECKING:
    from portraitseg.pipeline import PortraitPipeline

#: ``progress(frames_done, frames_total_or_None)``
Progress = Callable[[int, "int | None"], None]


@dataclass
class ClipResult:
    """A rendered clip: frames written, frames segmented, wall seconds, and the pipeline's notes."""

    path: Path
    frames: int
    segmented: int
    seconds: float
    notes: list[str] = field(default_factory=list)


def frame_alpha(pipeline: PortraitPipeline, image: torch.Tensor, smoother: TemporalSmoother | None,
                segment: bool) -> tuple[torch.Tensor, list[str]]:
    """The subject alpha ``(1, 1, h, w)`` of ``image (1, 3, H, W)`` in [0, 1]: segmented (and
    smoothed) when ``segment``, else the smoother's previous alpha carried by the flow."""
    if not segment:
        if smoother is None:
            raise ValueError("a frame that is not segmented needs a smoother to carry the alpha")
        return smoother.propagate(image), []
    parse, person, _, _ = pipeline.parse(image)
    alpha, notes = pipeline.subject_alpha(image, parse, person)
    alpha = alpha.to(image.dtype)
    return (alpha if smoother is None else smoother(alpha, image)), list(notes)


def render_frame(pipeline: PortraitPipeline, rgb: np.ndarray, smoother: TemporalSmoother | None,
                 segment: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One frame ``rgb (H, W, 3)`` uint8 -> ``(portrait (H, W, 3) uint8, alpha (h, w) float32,
    notes)``."""
    with torch.inference_mode():
        image = stack_images(rgb, pipeline.max_pixels, pipeline.device)
        alpha, notes = frame_alpha(pipeline, image, smoother, segment)
        kept = alpha[0, 0].float().cpu().numpy()
        portrait, _ = pipeline.render(image, alpha, in_place=True)
        return to_uint8(portrait[0]), kept, notes


def render_clip(
    pipeline: PortraitPipeline,
    src: str | Path,
    out: str | Path,
    *,
    crf: int = DEFAULT_CRF,
    every: int = 1,
    smoother: TemporalSmoother | None = None,
    progress: Progress | None = None,
) -> ClipResult:
    """Render the clip ``src`` into the MP4 ``out`` (same size, frame count and time stamps,
    audio copied), written under its final name only when complete.

    Args:
        pipeline: the render path (its ``max_pixels`` applies to each frame).
        crf: H.264 quality, 0..51 (lower is better).
        every: segment every ``every``-th frame (1: all); the others carry the alpha by the flow.
        smoother: the temporal smoothing (default: a :class:`TemporalSmoother` with its defaults;
            needed when ``every > 1``); it is reset first.
        progress: called after each frame with ``(done, total or None)``.

    Raises:
        VideoError: the clip cannot be read (see :func:`~portraitseg.video.io.open_clip`).
        WriteError: the output could not be written (nothing is left under ``out``).
    """
    if every < 1:
        raise ValueError(f"every={every!r} must be an integer >= 1")
    smoother = TemporalSmoother() if smoother is None else smoother
    smoother.reset()
    start = time.perf_counter()
    container, info = open_clip(src, pipeline.max_pixels)
    notes: list[str] = []
    done = segmented = 0
    try:
        with contextlib.ExitStack() as stack:
            writer: ClipWriter | None = None
            early: list = []  # audio packets before the first frame, which gives the upright size
            for item in packets(container, info):
                if not isinstance(item, tuple):
                    if writer is None:
                        early.append(item)
                    else:
                        writer.audio(item)
                    continue
                rgb, pts = item
                if writer is None:
                    audio = container.streams.audio[0] if info.audio else None
                    size = (rgb.shape[1], rgb.shape[0])
                    writer = stack.enter_context(ClipWriter(out, info, audio, crf, size=size))
                    for packet in early:
                        writer.audio(packet)
                segment = done % every == 0
                portrait, _, said = render_frame(pipeline, rgb, smoother, segment)
                notes += [n for n in said if n not in notes]
                writer.frame(portrait, pts)
                done += 1
                segmented += segment
                if progress is not None:
                    progress(done, info.frames)
            if writer is None:
                raise VideoError(f"{info.path}: has a video stream without frames; nothing to render")
            path = writer.commit()
    finally:
        container.close()
    return ClipResult(path, done, segmented, time.perf_counter() - start, notes)


__all__ = ["ClipResult", "frame_alpha", "render_clip", "render_frame"]
