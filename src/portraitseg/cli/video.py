"""The clips of a ``portraitseg render`` run (:mod:`portraitseg.video`): options, loop, report.

Inputs with a video suffix (:data:`portraitseg.video.VIDEO_SUFFIXES`) are rendered here, after the
photos, with the run's pipeline (same preset, strength, keep, subject); each becomes
``<stem>_portrait.mp4`` (named by :class:`~portraitseg.cli.outputs.OutputNamer`, never replacing a
file without ``--overwrite``). A clip refused as input (:class:`~portraitseg.video.io.VideoError`)
makes the run's exit status 2; a clip that fails otherwise, 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from portraitseg.argtypes import float_in, int_in
from portraitseg.cli.outputs import OutputNamer
from portraitseg.cli.photos import Job, error_text, say
from portraitseg.video import STRENGTH, is_clip


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    """``--crf``, ``--matte-every``, ``--video-faces``, ``--smooth`` (clips only)."""
    group = parser.add_argument_group("video clips (.mp4 .mov .m4v .mkv .webm .avi -> <stem>_portrait.mp4)")
    group.add_argument("--crf", type=int_in(0, 51), default=18, metavar="N",
                       help="H.264 quality of clips, 0 (lossless) .. 51 (worst) (default: 18)")
    group.add_argument("--matte-every", type=int_in(1, 1000), default=1, metavar="K",
                       help="segment every K-th frame of a clip, the alpha carried between by the optical "
                            "flow (default: 1, every frame)")
    group.add_argument("--video-faces", action="store_true",
                       help="run the face pass (MTCNN + a parse of each face) on clips too; by default a "
                            "clip's frames are segmented in one pass (3-4x faster at 720p)")
    group.add_argument("--smooth", type=float_in(0.0, 0.95), default=STRENGTH, metavar="X",
                       help="share of the previous frame's alpha kept where the picture did not change "
                            f"(0..0.95; 0: each frame on its own; default: {STRENGTH})")


def split_clips(items: list[tuple[Path, Path]]) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """``(photos, clips)`` of the inputs, in order."""
    clips = [item for item in items if is_clip(item[0])]
    return [item for item in items if not is_clip(item[0])], clips


class FrameProgress:
    """``<clip>: frame N/M`` on stderr: rewritten in place on a terminal, else every 10%."""

    def __init__(self, src: Path, quiet: bool) -> None:
        self.src, self.quiet = src, quiet
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def __call__(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        text = f"{self.src}: frame {done}/{total if total else '?'}"
        if self.tty:
            print(f"\r{text}", end="", file=sys.stderr, flush=True)
            self.shown = done
            return
        tenth = done * 10 // total if total else done // 100
        if tenth != self.shown:
            self.shown = tenth
            say(text, file=sys.stderr)

    def close(self) -> None:
        """End the line rewritten in place."""
        if self.tty and self.shown >= 0:
            print(file=sys.stderr)
            self.shown = -1


def render_clips(job: Job, clips: list[tuple[Path, Path]], outdir: Path, namer: OutputNamer,
                 args: argparse.Namespace) -> tuple[int, int]:
    """Render each clip into ``outdir``; returns ``(failed, refused)``: clips that failed, and of
    them those refused as input."""
    if not clips:
        return 0, 0
    from portraitseg.io import InputError
    from portraitseg.video.io import VideoError  # PyAV: imported only when there are clips
    from portraitseg.video.run import render_clip
    from portraitseg.video.temporal import TemporalSmoother

    if args.stages or args.save_alpha:
        say("warning: --stages and --save-alpha apply to photos only; clips get their portrait",
            file=sys.stderr)
    failed = refused = 0
    for src, rel in clips:
        out: Path | None = None
        progress = FrameProgress(src, args.quiet)
        start = time.perf_counter()
        try:
            folder = outdir / rel
            folder.mkdir(parents=True, exist_ok=True)
            out = namer.reserve(src, folder, False)[0]
            pipeline = job.pipeline if args.video_faces else job.pipeline.with_options(face_pass=False)
            result = render_clip(pipeline, src, out, crf=args.crf, every=args.matte_every,
                                 smoother=TemporalSmoother(strength=args.smooth), progress=progress,
                                 threads=getattr(args, "threads", None), focus=job.focus)
        except Exception as err:  # noqa: BLE001 - one bad clip must not stop the others
            progress.close()
            namer.release(out)
            failed += 1
            refused += isinstance(err, VideoError)
            where = "" if isinstance(err, InputError) else f"{src}: "
            say(f"error: {where}{error_text(err)}", file=sys.stderr)
            continue
        progress.close()
        namer.written(out)
        for note in result.notes:
            say(f"warning: {src}: {note}", file=sys.stderr)
        if not args.quiet:
            rate = result.frames / max(time.perf_counter() - start, 1e-9)
            say(f"{src} -> {out} ({result.frames} frames, {rate:.2f} frames/s)")
    return failed, refused


def video_exit(failed_photos: int, clip_status: tuple[int, int]) -> int:
    """The run's exit status: 2 if a clip was refused as input, else 1 if anything failed, else 0."""
    failed, refused = clip_status
    return 2 if refused else 1 if failed or failed_photos else 0


__all__ = ["FrameProgress", "add_video_arguments", "render_clips", "split_clips", "video_exit"]
