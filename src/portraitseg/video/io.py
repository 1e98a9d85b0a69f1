"""Clips in and out with PyAV (its wheels carry FFmpeg): probe, decode, encode, copy the audio.

:func:`open_clip` opens and checks a clip (:class:`VideoError` names the file and what is wrong:
unreadable, no video stream, a codec this FFmpeg cannot decode, over the pixel limit, an odd
size, audio that MP4 cannot carry). :func:`packets` walks the clip once, yielding decoded video
frames and the audio packets to copy, in file order. :class:`ClipWriter` encodes H.264 yuv420p
into a temporary file in the output folder, copies the audio packets, and renames the file to its
final name only in :meth:`ClipWriter.commit`; closed without it (an error, Ctrl-C) it deletes the
temporary, so nothing half-written is ever left under the final name.

Rotation: a clip stored sideways with a display rotation (as phones record portrait video) is
turned upright before it is segmented, and written upright, without the rotation.

Timestamps: every frame keeps its presentation time (``pts`` in the input stream's time base),
so a variable-frame-rate clip stays variable and in sync with its audio; timestamps that do not
increase are refused.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from portraitseg.io import InputError, WriteError, check_destination, fsync_dir, temporary_name

#: audio codecs an MP4 file carries, copied as they are
MP4_AUDIO = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})
#: H.264 constant rate factor (0 lossless .. 51 worst; 18 is visually near-lossless)
DEFAULT_CRF = 18


class VideoError(InputError):
    """A clip that cannot be rendered (the message names the file, what is wrong and what to do)."""


@dataclass
class ClipInfo:
    """What :func:`open_clip` found: frame size, average frame rate, the video stream's time base,
    the video and audio codecs (None: no audio), the frame count (None if the file does not say)."""

    path: Path
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    codec: str
    frames: int | None
    audio: str | None


def _fail(path: Path, what: str) -> VideoError:
    return VideoError(f"{path}: {what}")


def open_clip(path: str | os.PathLike, max_pixels: int | None) -> tuple[Any, ClipInfo]:
    """Open ``path`` and check it can be rendered; returns the PyAV container and its
    :class:`ClipInfo` (close the container when done).

    Raises:
        VideoError: unreadable, no video stream (e.g. audio only), undecodable codec, a frame over
            ``max_pixels``, an odd width or height, or an audio codec MP4 cannot carry.
    """
    path = Path(path)
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise _fail(path, f"cannot be read as a video ({reason}); is it a complete video file?") from None
    try:
        info = _check(path, container, max_pixels)
    except BaseException:
        container.close()
        raise
    return container, info


def _check(path: Path, container: Any, max_pixels: int | None) -> ClipInfo:
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        raise _fail(path, f"has no video stream ({kinds}); give a video clip")
    stream = container.streams.video[0]
    ctx = stream.codec_context
    if ctx is None or ctx.codec is None or not ctx.codec.is_decoder:
        tag = getattr(stream.codec_context, "codec_tag", "") if ctx is not None else ""
        raise _fail(path, f"its video codec ({tag or 'unknown'}) cannot be decoded by this FFmpeg; "
                          "convert the clip to H.264 first")
    width, height = ctx.width, ctx.height
    if not width or not height:
        raise _fail(path, f"its video stream ({ctx.name}) has no frame size; the file is damaged")
    if max_pixels is not None and width * height > max_pixels:
        raise _fail(path, f"frames are {width}x{height} = {width * height:,} pixels, over the limit of "
                          f"--max-pixels {max_pixels:,}; downscale the clip or raise the limit")
    if width % 2 or height % 2:
        raise _fail(path, f"frames are {width}x{height}: H.264 yuv420p needs an even width and height; "
                          "crop or pad the clip by one pixel")
    audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
    if audio is not None and audio not in MP4_AUDIO:
        raise _fail(path, f"its audio ({audio}) cannot be copied into MP4 (it carries "
                          f"{', '.join(sorted(MP4_AUDIO))}); convert the audio to AAC first")
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate or Fraction(25)
    frames = int(stream.frames) or None
    if frames is None and stream.duration and stream.time_base:
        frames = max(1, round(float(stream.duration * stream.time_base * rate)))
    return ClipInfo(path, width, height, Fraction(rate), Fraction(stream.time_base or Fraction(1, 90000)),
                    ctx.name, frames, audio)


def packets(container: Any, info: ClipInfo) -> Iterator[tuple[np.ndarray, int] | Any]:
    """The clip once through, in file order: each video frame as ``(rgb (H, W, 3) uint8, pts)``,
    turned upright (a phone's display rotation applied, as a player shows it), and each audio
    packet (an ``av.Packet``) to copy.

    Raises:
        VideoError: a frame that does not decode, or timestamps that do not increase.
    """
    video = container.streams.video[0]
    streams = [video, *container.streams.audio[:1]]
    last: int | None = None
    step = max(1, round(1 / (info.rate * info.time_base)))  # one frame, for frames without a time
    try:
        for packet in container.demux(streams):
            if packet.stream.type == "audio":
                if packet.dts is not None:  # the demuxer's flush packet has none
                    yield packet
                continue
            for frame in packet.decode():
                pts = frame.pts if frame.pts is not None else (0 if last is None else last + step)
                turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise quarter turns
                if last is not None and pts <= last:
                    raise _fail(info.path, f"frame timestamps do not increase ({pts} after {last}); "
                                           "remux the clip first, e.g. ffmpeg -i IN -c copy OUT.mp4")
                last = pts
                rgb = frame.to_ndarray(format="rgb24")
                yield (np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb), pts
    except av.FFmpegError as err:
        raise _fail(info.path, f"a frame could not be decoded ({err}); the file is damaged") from None


class ClipWriter:
    """H.264 (libx264, yuv420p, ``crf``) + the copied audio into ``path``, all or nothing.

    Use as a context manager: frames go in with :meth:`frame`, audio packets with :meth:`audio`,
    and :meth:`commit` renames the finished file to ``path``; leaving the block without it
    removes the temporary file. The output keeps the input's frame rate and time stamps, and its
    size (``size``: ``(width, height)`` of the upright frames, default the clip's stored size).
    """

    def __init__(self, path: str | os.PathLike, info: ClipInfo, audio_stream: Any | None = None,
                 crf: int = DEFAULT_CRF, size: tuple[int, int] | None = None) -> None:
        if not 0 <= crf <= 51:
            raise ValueError(f"crf={crf!r} must be in 0..51")
        self.path = Path(path)
        check_destination(self.path)
        self.tmp = temporary_name(self.path)
        os.close(os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        self.container: Any = None
        try:
            self.container = av.open(str(self.tmp), "w", format="mp4")
            video = self.container.add_stream("libx264", rate=info.rate,
                                              options={"crf": str(crf), "preset": "veryfast"})
            video.width, video.height = size or (info.width, info.height)
            video.pix_fmt = "yuv420p"
            video.time_base = info.time_base
            video.codec_context.time_base = info.time_base
            self.video = video
            self.sound = (self.container.add_stream_from_template(audio_stream)
                          if audio_stream is not None else None)
        except BaseException:
            self._discard()
            raise
        self.frames = 0

    def __enter__(self) -> ClipWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._discard()

    def frame(self, rgb: np.ndarray, pts: int) -> None:
        """Encode ``rgb (H, W, 3)`` uint8 shown at ``pts`` (the input stream's time base)."""
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts, frame.time_base = pts, self.video.time_base
        self._mux(self.video.encode(frame))
        self.frames += 1

    def audio(self, packet: Any) -> None:
        """Copy an audio packet of the input (:func:`packets`) as it is."""
        if self.sound is not None:
            packet.stream = self.sound
            self._mux([packet])

    def _mux(self, items: Any) -> None:
        try:
            for item in items:
                self.container.mux(item)
        except OSError as err:
            raise WriteError(f"{self.path}: could not be written ({err.strerror or err}); nothing was "
                             "left under that name") from None

    def commit(self) -> Path:
        """Flush the encoder, close the file and rename it to its final name."""
        self._mux(self.video.encode())
        self.container.close()
        self.container = None
        with open(self.tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        check_destination(self.path)
        os.replace(self.tmp, self.path)
        fsync_dir(self.path.parent)
        return self.path

    def _discard(self) -> None:
        if self.container is not None:
            with contextlib.suppress(Exception):
                self.container.close()
            self.container = None
        with contextlib.suppress(OSError):
            self.tmp.unlink()


__all__ = ["DEFAULT_CRF", "MP4_AUDIO", "ClipInfo", "ClipWriter", "VideoError", "open_clip", "packets"]
