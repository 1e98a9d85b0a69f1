"""A clip through the pipeline, frame by frame: :func:`render_clip`.

Each frame runs the pipeline's own steps (:meth:`~portraitseg.pipeline.PortraitPipeline.parse`,
:meth:`~portraitseg.pipeline.PortraitPipeline.subject_alpha`,
:meth:`~portraitseg.pipeline.PortraitPipeline.render`); between them the subject alpha goes
through a :class:`~portraitseg.video.temporal.TemporalSmoother`. With ``every=k`` only every k-th
frame is segmented and the alpha is carried to the others by the optical flow; every frame is
rendered. Segmenting is sequential (:func:`segment_frame`); renders (:func:`render_frame`) run side
by side on the CPU.
"""

from __future__ import annotations

import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from portraitseg.pipeline import stack_images, to_uint8
from portraitseg.runtime import intra_op_threads, side_by_side
from portraitseg.subject.people import Focus
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
                segment: bool, focus: Focus | None = None) -> tuple[torch.Tensor, list[str]]:
    """The subject alpha ``(1, 1, h, w)`` of ``image (1, 3, H, W)`` in [0, 1]: segmented, the people
    chosen as for a photo (the pipeline's ``people`` rule, or the one at ``focus`` in this frame),
    and smoothed when ``segment``; else the smoother's previous alpha carried by the flow."""
    if not segment:
        if smoother is None:
            raise ValueError("a frame that is not segmented needs a smoother to carry the alpha")
        return smoother.propagate(image), []
    parse, person, faces, _ = pipeline.parse(image)
    alpha, notes = pipeline.subject_alpha(image, parse, person)
    alpha, chosen = pipeline.choose_people(alpha, person, faces, tuple(image.shape[-2:]), focus)
    alpha = alpha.to(image.dtype)
    return (alpha if smoother is None else smoother(alpha, image)), [*notes, *chosen]


def segment_frame(pipeline: PortraitPipeline, rgb: np.ndarray, smoother: TemporalSmoother | None,
                  segment: bool = True, focus: Focus | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """One frame ``rgb (H, W, 3)`` uint8 -> ``(image (1, 3, H, W), alpha (1, 1, h, w), notes)``:
    the frame as the pipeline takes it and its (smoothed) subject alpha (:func:`frame_alpha`)."""
    with torch.inference_mode():
        image = stack_images(rgb, pipeline.max_pixels, pipeline.device)
        alpha, notes = frame_alpha(pipeline, image, smoother, segment, focus)
        return image, alpha, notes


def render_frame(pipeline: PortraitPipeline, image: torch.Tensor, alpha: torch.Tensor) -> np.ndarray:
    """The portrait ``(H, W, 3)`` uint8 of a frame from :func:`segment_frame` (rendered in place:
    ``image`` is used up). Frames are independent here, so several may render at once."""
    with torch.inference_mode():
        portrait, _ = pipeline.render(image, alpha, in_place=True)
        return to_uint8(portrait[0])


def render_clip(
    pipeline: PortraitPipeline,
    src: str | Path,
    out: str | Path,
    *,
    crf: int = DEFAULT_CRF,
    every: int = 1,
    smoother: TemporalSmoother | None = None,
    progress: Progress | None = None,
    threads: int | None = None,
    focus: Focus | None = None,
) -> ClipResult:
    """Render the clip ``src`` into the MP4 ``out`` (same size, frame count and time stamps,
    audio copied), written under its final name only when complete.

    Frames are segmented and smoothed one after the other (each alpha depends on the one before);
    a frame is rendered once the next one is segmented (:meth:`TemporalSmoother.look_ahead`). On
    the CPU, renders run side by side, :func:`~portraitseg.runtime.side_by_side` of them with
    ``threads`` intra-op threads each (default one), while the next frames are segmented. Frames
    are written in order.

    Args:
        pipeline: the render path (its ``max_pixels`` applies to each frame).
        crf: H.264 quality, 0..51 (lower is better).
        every: segment every ``every``-th frame (1: all); the others carry the alpha by the flow.
        smoother: the temporal smoothing (default: a :class:`TemporalSmoother` with its defaults;
            needed when ``every > 1``); it is reset first.
        progress: called after each frame is written with ``(done, total or None)``.
        threads: intra-op threads per frame render on the CPU (None: one, renders side by side).
        focus: keep the person at this point ``(x, y)`` of each frame sharp (pixels, or fractions
            in [0, 1]); None: the pipeline's ``people`` rule (the main subjects by default), as
            for a photo.

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
    workers = side_by_side(threads) if pipeline.device.type == "cpu" else 1
    notes: list[str] = []
    segmented = seen = 0
    held: tuple[torch.Tensor, torch.Tensor, int] | None = None  # a frame waiting for the next one
    try:
        with contextlib.ExitStack() as stack:
            pool: ThreadPoolExecutor | None = None
            if workers > 1:
                stack.enter_context(intra_op_threads(threads or 1))
                pool = ThreadPoolExecutor(workers, thread_name_prefix="portraitseg-frame")
                stack.callback(pool.shutdown, wait=True, cancel_futures=True)
            writer: _Frames | None = None
            early: list = []  # audio packets before the first frame, which gives the upright size
            for item in packets(container, info):
                if not isinstance(item, tuple):
                    if writer is None:
                        early.append(item)
                    else:
                        writer.writer.audio(item)
                    continue
                rgb, pts = item
                if writer is None:
                    audio = container.streams.audio[0] if info.audio else None
                    size = (rgb.shape[1], rgb.shape[0])
                    writer = _Frames(stack.enter_context(ClipWriter(out, info, audio, crf, size=size)),
                                     info.frames, progress)
                    for packet in early:
                        writer.writer.audio(packet)
                segment = seen % every == 0
                image, alpha, said = segment_frame(pipeline, rgb, smoother, segment, focus)
                notes += [n for n in said if n not in notes]
                segmented += segment
                seen += 1
                if held is not None:  # the frame before is final now that this one is known
                    with torch.inference_mode():
                        writer.add(pool, pipeline, held[0], smoother.look_ahead(held[1]), held[2])
                held = image, alpha, pts
                writer.flush(workers)
            if writer is None or held is None:
                raise VideoError(f"{info.path}: has a video stream without frames; nothing to render")
            writer.add(pool, pipeline, *held)
            writer.flush(0)
            path = writer.writer.commit()
    finally:
        container.close()
    return ClipResult(path, writer.done, segmented, time.perf_counter() - start, notes)


class _Frames:
    """The frames of a clip on their way to the writer, in order: rendered (an array) or being
    rendered (a future)."""

    def __init__(self, writer: ClipWriter, total: int | None, progress: Progress | None) -> None:
        self.writer, self.total, self.progress = writer, total, progress
        self.pending: deque[tuple[np.ndarray | Future, int]] = deque()
        self.done = 0

    def add(self, pool: ThreadPoolExecutor | None, pipeline: PortraitPipeline, image: torch.Tensor,
            alpha: torch.Tensor, pts: int) -> None:
        """Render a frame here, or in ``pool`` beside the others."""
        portrait = (render_frame(pipeline, image, alpha) if pool is None
                    else pool.submit(render_frame, pipeline, image, alpha))
        self.pending.append((portrait, pts))

    def flush(self, keep: int) -> None:
        """Write the oldest frames until at most ``keep`` are pending."""
        while len(self.pending) > keep:
            portrait, pts = self.pending.popleft()
            self.writer.frame(portrait.result() if isinstance(portrait, Future) else portrait, pts)
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)


__all__ = ["ClipResult", "frame_alpha", "render_clip", "render_frame", "segment_frame"]
