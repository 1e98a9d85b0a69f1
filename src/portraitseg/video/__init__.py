"""Video portraits: every frame of a clip rendered by the pipeline, with a steady subject edge.

- :mod:`portraitseg.video.temporal`: the subject alpha smoothed over time, following motion;
- :mod:`portraitseg.video.io`: clips in and out with PyAV (decode, H.264 encode, audio copied);
- :mod:`portraitseg.video.run`: the loop, frame by frame through the pipeline's steps.

This package's ``__init__`` imports nothing heavy (the suffixes below are read by the CLI before
PyTorch or PyAV is imported).
"""

from __future__ import annotations

#: files rendered as clips (by suffix, case-insensitive); everything else is a photo
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
#: the output of a clip is always an MP4 (H.264 + the copied audio)
VIDEO_OUTPUT_SUFFIX = ".mp4"
#: the temporal smoothing's default share of the previous alpha kept where nothing changed
#: (:class:`portraitseg.video.temporal.TemporalSmoother`, ``--smooth``)
STRENGTH = 0.8


def is_clip(path: object) -> bool:
    """Whether ``path`` (a str or path) names a clip by its suffix (:data:`VIDEO_SUFFIXES`)."""
    return str(path).lower().endswith(VIDEO_SUFFIXES)


__all__ = ["STRENGTH", "VIDEO_OUTPUT_SUFFIX", "VIDEO_SUFFIXES", "is_clip"]
