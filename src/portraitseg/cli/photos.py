"""The photos of a ``portraitseg render`` run: each one read, rendered and written, overlapped.

A small thread pipeline (:class:`PhotoLoop`): the next photo is decoded in a thread while one is
rendered (PyTorch releases the GIL), and each is encoded and written in another thread behind it;
the run's report keeps the input order, and a photo that fails is reported and skipped.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from portraitseg.cli.outputs import OutputNamer
from portraitseg.io import (
    InputError,
    MultiFrameWarning,
    Photo,
    WriteError,
    atomic_write_all,
    check_image,
    encode_image,
    output_notes,
    read_photo,
)

if TYPE_CHECKING:
    from portraitseg.pipeline import PortraitPipeline

#: Photos decoded ahead of the one being rendered, and written behind it.
READ_AHEAD = 1
WRITE_BEHIND = 1


@dataclass
class Job:
    """What every photo of a run is rendered with."""

    pipeline: PortraitPipeline
    max_pixels: int
    quality: int
    notes: list[str] = field(default_factory=list)
    #: the person kept sharp in every photo (``--focus``: pixels or fractions), None: the default
    focus: tuple[float, float] | None = None


def start_job(args: argparse.Namespace, outdir: Path, build_job: Any, usage_error: type[Exception]) -> Job:
    """The job of a run (``build_job(args)``), its set-up notes printed, the output folder made;
    ``usage_error`` naming ``-o`` if the folder cannot be made."""
    job = build_job(args)
    for note in job.notes:
        say(f"warning: {note}", file=sys.stderr)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise usage_error(f"-o {outdir}: cannot create the output folder ({err.strerror or err})") from None
    return job


def read_input(src: Path, max_pixels: int) -> tuple[Photo, list[str]]:
    """Decode ``src`` (:func:`portraitseg.io.read_photo`); returns the photo and notes (only the
    first frame of an animated GIF or multi-page TIFF read, a colour profile converted...)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MultiFrameWarning)
        photo = read_photo(src, max_pixels=max_pixels)
    notes = [str(w.message).removeprefix(f"{src}: ")
             for w in caught if issubclass(w.category, MultiFrameWarning)]
    return photo, notes + photo.notes


@dataclass
class Rendered:
    """A photo's outputs as pixels: ``portrait`` ``(H, W, 3)`` uint8, ``alpha`` ``(H, W)`` uint8
    (``--save-alpha``), ``figure`` (``--stages``), and the pipeline's notes."""

    portrait: np.ndarray
    alpha: np.ndarray | None
    figure: np.ndarray | None
    notes: list[str]


def render_photo(job: Job, photo: Photo, alpha: bool = False, stages: bool = False) -> Rendered:
    """Run the pipeline on a decoded photo; ``alpha`` / ``stages``: also the matte / the figure."""
    import torch
    import torch.nn.functional as F

    from portraitseg.pipeline import to_uint8
    from portraitseg.sizing import long_side
    from portraitseg.viz import STAGES_PANEL, stages_figure

    rgb = photo.rgb
    with torch.inference_mode():
        image = torch.from_numpy(rgb).to(job.pipeline.device).permute(2, 0, 1)[None]  # uint8: scaled there
        result = job.pipeline(image, focus=job.focus, dtype=torch.uint8)
        del image
        portrait = result.portrait[0].permute(1, 2, 0).cpu().numpy()
        matte = to_uint8(result.alpha[0, 0]) if alpha else None
        figure = None
        if stages:
            size = long_side(*rgb.shape[:2], STAGES_PANEL, upscale=False)
            parse = F.interpolate(result.parse, size=size, mode="bilinear", align_corners=False)
            label = parse[0].argmax(0).byte().cpu().numpy()
            figure = stages_figure(rgb, label, result.alpha[0, 0].float().cpu().numpy(), portrait)
    return Rendered(portrait, matte, figure, list(result.notes))


def write_outputs(job: Job, photo: Photo, rendered: Rendered, out: Path, figure: Path | None,
                  alpha: Path | None) -> list[str]:
    """Encode and write a photo's outputs, all or none (:func:`portraitseg.io.atomic_write_all`):
    the portrait keeps the photo's colour profile and transparency; returns notes on them."""
    outputs = [(out, encode_image(out, rendered.portrait, job.quality, photo.icc_profile, photo.alpha))]
    if alpha is not None and rendered.alpha is not None:
        outputs.append((alpha, encode_image(alpha, rendered.alpha)))
    if figure is not None and rendered.figure is not None:
        outputs.append((figure, encode_image(figure, rendered.figure, job.quality, photo.icc_profile)))
    atomic_write_all(outputs, check=check_image)
    return output_notes(photo, out)


def render_file(job: Job, src: Path, out: Path, figure: Path | None, alpha: Path | None = None) -> list[str]:
    """Render one photo into ``out`` (the stages figure into ``figure``, the 8-bit subject alpha
    into ``alpha``), in this thread; returns the warnings."""
    photo, notes = read_input(src, job.max_pixels)
    rendered = render_photo(job, photo, alpha is not None, figure is not None)
    return notes + rendered.notes + write_outputs(job, photo, rendered, out, figure, alpha)


def error_text(err: BaseException) -> str:
    """The one-line message of a photo's failure (the file named by the caller if not in it)."""
    import torch

    if isinstance(err, (InputError, WriteError)):  # their messages name the file
        return str(err)
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or "can't allocate memory" in str(err):
        return ("out of memory while rendering; lower --max-pixels to skip such photos, use "
                "--device cpu if the GPU is small, or downscale the photo")
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def say(text: str, file: Any = None) -> None:
    """``print`` that never fails on file names that are not valid UTF-8 (shown as ``\\xNN``)."""
    print(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), file=file)


def progress_bar(total: int, quiet: bool) -> Any:
    """A progress bar on a terminal's stderr for two photos or more (None otherwise)."""
    if quiet or total < 2 or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.description}"), console=Console(stderr=True), transient=True,
    )


@dataclass
class _Render:
    """A photo being rendered."""

    src: Path
    paths: tuple[Path, Path | None, Path | None]
    photo: Photo
    notes: list[str]
    start: float
    result: Future


@dataclass
class _Pending:
    """A photo whose outputs are being written."""

    src: Path
    paths: tuple[Path, Path | None, Path | None]
    notes: list[str]
    start: float
    write: Future


class PhotoLoop:
    """The loop of a run: decode ahead, render here, write behind; report in input order."""

    def __init__(self, args: argparse.Namespace, items: list[tuple[Path, Path]], outdir: Path) -> None:
        self.args, self.items, self.outdir = args, items, outdir
        self.failed = 0
        self.reader = ThreadPoolExecutor(1, thread_name_prefix="portraitseg-read")
        self.writer = ThreadPoolExecutor(1, thread_name_prefix="portraitseg-write")
        self.renderer: ThreadPoolExecutor | None = None
        self.ahead = READ_AHEAD
        self.reads: deque[Future] = deque()
        self.writes: deque[_Pending] = deque()
        self.next_read = 0

    def read_ahead(self, max_pixels: int, count: int) -> None:
        """Keep ``count`` decodes queued beyond the photo being rendered."""
        while self.next_read < len(self.items) and len(self.reads) < count:
            src = self.items[self.next_read][0]
            self.reads.append(self.reader.submit(read_input, src, max_pixels))
            self.next_read += 1

    def fail(self, src: Path, err: BaseException) -> None:
        """Count and report a photo that failed."""
        self.failed += 1
        where = "" if isinstance(err, (InputError, WriteError)) else f"{src}: "  # these name the file
        say(f"error: {where}{error_text(err)}", file=sys.stderr)

    def finish(self, namer: OutputNamer, keep: int) -> None:
        """Report the written photos until at most ``keep`` writes are pending."""
        while len(self.writes) > keep:
            pending = self.writes.popleft()
            try:
                notes = pending.notes + pending.write.result()
            except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
                namer.release(*pending.paths)
                self.fail(pending.src, err)
                continue
            namer.written(*pending.paths)
            for warning in notes:
                say(f"warning: {pending.src}: {warning}", file=sys.stderr)
            if not self.args.quiet:
                out, *extras = pending.paths
                extra = "".join(f" + {p}" for p in extras if p is not None)
                say(f"{pending.src} -> {out}{extra} ({time.perf_counter() - pending.start:.2f} s)")

    def workers(self, job: Job) -> int:
        """Photos rendered at once: on the CPU, for two photos or more, one per
        :func:`~portraitseg.runtime.usable_cores` divided by the intra-op threads chosen with
        ``--threads`` (default: one thread each). A photo's many small operations parallelise
        poorly within it, so photos side by side on one thread each render more photos a second
        than one photo at a time on all threads (``experiments/bench_render_path``: the folder row)."""

        from portraitseg.runtime import side_by_side

        if len(self.items) < 2 or job.pipeline.device.type != "cpu":
            return 1
        return min(len(self.items), side_by_side(getattr(self.args, "threads", None)))

    def render_all(self, job: Job, namer: OutputNamer, progress: Any, task: Any) -> None:
        """Render every photo (the first already queued by :meth:`read_ahead`), ``workers`` at
        once, reporting each in input order."""
        workers = self.workers(job)
        if workers == 1:
            self._render_each(job, namer, progress, task, 1)
            return
        from portraitseg.runtime import intra_op_threads

        self.renderer = ThreadPoolExecutor(workers, thread_name_prefix="portraitseg-render")
        self.ahead = READ_AHEAD + workers - 1
        with intra_op_threads(getattr(self.args, "threads", None) or 1):
            self._render_each(job, namer, progress, task, workers)

    def _render_each(self, job: Job, namer: OutputNamer, progress: Any, task: Any, workers: int) -> None:
        """The loop of :meth:`render_all`. Interrupted (Ctrl-C, SIGTERM), it still writes the photos
        being rendered (at most ``workers - 1``; a second Ctrl-C drops them) before unwinding."""
        renders: deque[_Render] = deque()
        try:
            for src, rel in self.items:
                if progress:
                    progress.update(task, description=src.name)
                started = self._start(job, namer, src, rel)
                if started is not None:
                    renders.append(started)
                elif progress:
                    progress.advance(task)
                while len(renders) >= workers:
                    self._collect(job, namer, renders.popleft(), progress, task)
        except KeyboardInterrupt:
            while renders:
                self._collect(job, namer, renders.popleft(), progress, task)
            raise
        while renders:
            self._collect(job, namer, renders.popleft(), progress, task)
        self.finish(namer, 0)

    def _start(self, job: Job, namer: OutputNamer, src: Path, rel: Path) -> _Render | None:
        """Decode (queued), reserve the outputs and start rendering ``src``; None if it failed."""
        args = self.args
        start = time.perf_counter()
        read = self.reads.popleft()
        self.read_ahead(job.max_pixels, self.ahead)
        paths: tuple[Path, Path | None, Path | None] | None = None
        try:
            photo, notes = read.result()
            folder = self.outdir / rel
            folder.mkdir(parents=True, exist_ok=True)
            paths = namer.reserve(src, folder, args.stages, args.save_alpha)
            if self.renderer is None:
                future: Future = Future()
                future.set_result(render_photo(job, photo, args.save_alpha, args.stages))
            else:
                future = self.renderer.submit(render_photo, job, photo, args.save_alpha, args.stages)
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
            if paths is not None:
                namer.release(*paths)
            self.finish(namer, 0)  # earlier photos are reported first
            self.fail(src, err)
            return None
        return _Render(src, paths, photo, notes, start, future)

    def _collect(self, job: Job, namer: OutputNamer, render: _Render, progress: Any, task: Any) -> None:
        """Wait for a started render, queue its outputs' writing, report what is written."""
        try:
            rendered = render.result.result()
            write = self.writer.submit(write_outputs, job, render.photo, rendered, *render.paths)
        except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
            namer.release(*render.paths)
            self.finish(namer, 0)
            self.fail(render.src, err)
        else:
            self.writes.append(_Pending(render.src, render.paths, render.notes + rendered.notes, render.start,
                                        write))
            self.finish(namer, WRITE_BEHIND)
        if progress:
            progress.advance(task)

    def close(self) -> None:
        """Stop reading ahead; wait for a write in progress (a file is never left half-written)."""
        self.reader.shutdown(wait=True, cancel_futures=True)
        if self.renderer is not None:
            self.renderer.shutdown(wait=True, cancel_futures=True)
        self.writer.shutdown(wait=True, cancel_futures=True)


__all__ = ["Job", "PhotoLoop", "Rendered", "error_text", "progress_bar", "read_input", "render_file",
           "render_photo", "say", "write_outputs"]
