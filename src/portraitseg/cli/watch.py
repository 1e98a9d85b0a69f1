"""``portraitseg render FOLDER --watch``: render each photo that arrives in a folder, once.

The folder is polled with the standard library every ``--interval`` seconds (no watcher
dependency). A photo is taken once it is completely written: its size and modification time
are the same at two polls in a row and it decodes; a file that does not decode although it stopped
changing gets one ``error:`` line and is tried again only if it changes (a writer that paused
longer than the interval). Photos already in the folder are rendered first, except those whose
portrait already exists (``<stem>_portrait<ext>`` in the output folder; ``--overwrite`` renders
them again). Outputs are named and written as in a folder run (:class:`OutputNamer`,
:func:`portraitseg.io.atomic_write_all`). Ctrl-C (or SIGTERM) ends the watch: the photo being
written is completed or removed, never left half-written, a summary is printed, exit status 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from portraitseg.argtypes import float_in
from portraitseg.cli.outputs import OutputNamer, expand_inputs, portrait_path
from portraitseg.cli.photos import Job, error_text, read_input, render_photo, say, start_job, write_outputs
from portraitseg.io import IMAGE_SUFFIXES, InputError, WriteError

#: Default seconds between two looks at the folder.
DEFAULT_INTERVAL = 1.0


def add_watch_arguments(parser: argparse.ArgumentParser) -> None:
    """``--watch`` and ``--interval``."""
    group = parser.add_argument_group("watched folder")
    group.add_argument("--watch", action="store_true",
                       help="keep running: render each new photo in the INPUT folder once it is completely "
                            "written (photos already there first); Ctrl-C ends it")
    group.add_argument("--interval", type=float_in(0.05, 3600.0), default=DEFAULT_INTERVAL, metavar="S",
                       help="seconds between two looks at the watched folder; a photo is taken when its "
                            f"size stayed the same for one interval (default: {DEFAULT_INTERVAL:g})")


@dataclass
class WatchState:
    """What the watch knows about the folder's files (keys: resolved paths)."""

    seen: dict[Path, tuple[int, int]] = field(default_factory=dict)  # size, mtime at the last poll
    failed: dict[Path, tuple[int, int]] = field(default_factory=dict)  # the state that failed
    done: set[Path] = field(default_factory=set)
    rendered: int = 0
    errors: int = 0
    skipped: int = 0


def watch_folder(args: argparse.Namespace, build_job: Callable[[argparse.Namespace], Job],
                 usage_error: type[Exception]) -> int:
    """Watch ``args.inputs[0]`` until interrupted; returns the exit status (0, or 2 for usage errors
    raised as ``usage_error``)."""
    if len(args.inputs) != 1 or not Path(args.inputs[0]).expanduser().is_dir():
        raise usage_error(f"--watch takes one folder to watch, got {' '.join(map(repr, args.inputs))}; "
                          "e.g. portraitseg render incoming/ -o portraits/ --watch")
    folder = Path(args.inputs[0]).expanduser()
    outdir = Path(args.output).expanduser()
    state = WatchState()
    job = start_job(args, outdir, build_job, usage_error)
    namer = OutputNamer([], args.overwrite)
    first = True
    if not args.quiet:
        say(f"watching {folder} every {args.interval:g} s (Ctrl-C ends)", file=sys.stderr)
    try:
        while True:
            poll(args, job, namer, folder, outdir, state, first)
            first = False
            time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        namer.release()  # an interrupted photo leaves no empty placeholder behind
    say(f"stopped watching {folder}: rendered {state.rendered} photo(s) into {outdir}"
        + (f", {state.errors} failed (see the error lines above)" if state.errors else "")
        + (f", {state.skipped} already rendered" if state.skipped else ""), file=sys.stderr)
    return 0


def _stamp(path: Path) -> tuple[int, int] | None:
    """``(size, mtime_ns)`` of a file, None if it is gone."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


def poll(args: argparse.Namespace, job: Job, namer: OutputNamer, folder: Path, outdir: Path,
         state: WatchState, first: bool) -> None:
    """One look at the folder: render the photos that stopped changing since the last look."""
    items, _, _ = expand_inputs([str(folder)], args.recursive, outdir)
    for src, rel in items:
        key = src.resolve()
        if key in state.done or src.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        out_folder = outdir / rel
        if first and not args.overwrite and portrait_path(src, out_folder).exists():
            state.done.add(key)
            state.skipped += 1
            continue
        stamp, before = _stamp(src), state.seen.get(key)
        state.seen[key] = stamp  # type: ignore[assignment]
        if stamp is None or stamp != before or stamp[0] == 0 or state.failed.get(key) == stamp:
            continue  # new, still changing, empty, or failed as it is
        render_one(args, job, namer, src, out_folder, state)


def render_one(args: argparse.Namespace, job: Job, namer: OutputNamer, src: Path, folder: Path,
               state: WatchState) -> None:
    """Decode, render and write one photo; a failure is reported and remembered."""
    key, start = src.resolve(), time.perf_counter()
    namer.protected.add(key)
    paths = None
    try:
        photo, notes = read_input(src, job.max_pixels)
        folder.mkdir(parents=True, exist_ok=True)
        paths = namer.reserve(src, folder, args.stages, args.save_alpha)
        rendered = render_photo(job, photo, args.save_alpha, args.stages)
        notes += rendered.notes + write_outputs(job, photo, rendered, *paths)
    except Exception as err:  # noqa: BLE001 - one bad file must not stop the watch
        if paths is not None:
            namer.release(*paths)
        state.failed[key] = state.seen[key]
        state.errors += 1
        where = "" if isinstance(err, (InputError, WriteError)) else f"{src}: "  # these name the file
        say(f"error: {where}{error_text(err)}", file=sys.stderr)
        return
    namer.written(*paths)
    state.done.add(key)
    state.failed.pop(key, None)
    state.rendered += 1
    for note in notes:
        say(f"warning: {src}: {note}", file=sys.stderr)
    if not args.quiet:
        say(f"{src} -> {paths[0]} ({time.perf_counter() - start:.2f} s)")


__all__ = ["DEFAULT_INTERVAL", "WatchState", "add_watch_arguments", "poll", "render_one", "watch_folder"]
