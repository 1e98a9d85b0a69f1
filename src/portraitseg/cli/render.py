"""``portraitseg render``: photos in, shallow depth-of-field portraits out.

This module parses arguments, handles files and reports; photo -> portrait is
:class:`portraitseg.pipeline.PortraitPipeline`, built by
:meth:`~portraitseg.pipeline.PortraitPipeline.from_pretrained` (the bundled model loads from its
TorchScript artifact, with PyTorch alone); the inputs and output names are
:mod:`portraitseg.cli.outputs`, the writing :func:`portraitseg.io.atomic_write_all`. The output
keeps the input's file format and size; ``--save-alpha`` also writes the subject alpha.

Render options come from the preset ``conf/render/<PRESET>.yaml`` (``--render PRESET``);
``--strength``, ``--falloff``, ``--feather``, ``--highlights`` override single values of it.

Photos overlap in a small thread pipeline (:mod:`portraitseg.cli.photos`): the next photo is
decoded while one is rendered, and each is encoded and written behind; the first photo is
decoded while PyTorch is imported. Before PyTorch is imported, idle OpenMP threads are told to sleep
(:func:`portraitseg.runtime.prefer_passive_wait`), and the thread count follows the usable cores
(``--threads`` to choose it).

Exit status: 0 every input rendered, 1 some inputs failed (one ``error:`` line each on stderr;
the others are still rendered), 2 usage errors (no input matched, unknown class, no model).
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from portraitseg.argtypes import float_in, int_in, parse_focus
from portraitseg.classes import CLASS_NAMES, F1_GROUPS
from portraitseg.cli.outputs import PORTRAIT_TAG, STAGES_TAG, OutputNamer, expand_inputs
from portraitseg.cli.photos import Job, PhotoLoop, progress_bar, say, start_job
from portraitseg.cli.video import add_video_arguments, render_clips, split_clips, video_exit
from portraitseg.cli.watch import add_watch_arguments, watch_folder
from portraitseg.config import DEFAULT_MAX_PIXELS, DEFAULT_MODEL_SIZE  # shared limits and defaults
from portraitseg.io import (
    IMAGE_SUFFIXES,
    InputError,
)
from portraitseg.presets import RENDER_LIMITS  # the ranges of the render options

if TYPE_CHECKING:  # PyTorch is imported when a model is loaded, not for --help or usage errors
    import torch


class UsageError(ValueError):
    """The command line cannot be run as given (exit status 2)."""


#: integer options of the preset (and of its ``person`` block)
_INTEGER_OPTIONS = ("falloff_levels", "work_size", "iterations")
#: --model-size range: at least one network stride, at most a size a CPU still segments
MODEL_SIZE_RANGE = (32, 4096)


def _span(option: str) -> str:
    """``lo..hi`` of a render option, for the help text."""
    lo, hi = RENDER_LIMITS[option]
    return f"{lo:g}..{hi:g}"


def check_render_options(node: Any, where: str) -> None:
    """Every number of a composed render preset finite and in :data:`RENDER_LIMITS` (the nested
    ``person`` options: finite; their ranges are the renderer's).

    Raises:
        UsageError: naming ``where`` (the preset file) and the key.
    """
    import math

    def check(key: str, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return
        name = key.rsplit(".", 1)[-1]
        if not math.isfinite(value):
            raise UsageError(f"{where}: {key}={value!r} is not a finite number")
        if name in _INTEGER_OPTIONS and int(value) != value:
            raise UsageError(f"{where}: {key}={value!r} must be an integer")
        lo, hi = RENDER_LIMITS.get(key, (-math.inf, math.inf))
        if not lo <= value <= hi:
            raise UsageError(f"{where}: {key}={value!r} is out of range: must be in [{lo:g}, {hi:g}]")

    for key, value in node.items():
        if hasattr(value, "items"):
            for sub, inner in value.items():
                check(f"{key}.{sub}", inner)
        else:
            check(str(key), value)


def _conf_dir() -> Path:
    from portraitseg.cli import config_dir

    return Path(config_dir())


def render_presets() -> list[str]:
    """Names of the render presets in ``conf/render/`` (:func:`portraitseg.presets.preset_names`)."""
    from portraitseg.presets import preset_names

    return preset_names()


def _default_preset() -> str:
    """The preset ``conf/render.yaml`` selects (its defaults list), else ``disc``."""
    entry = _conf_dir() / "render.yaml"
    if entry.is_file():
        import yaml

        for item in (yaml.safe_load(entry.read_text()) or {}).get("defaults") or []:
            if not isinstance(item, str) and "render" in item:
                return str(item["render"])
    return "disc"


# --------------------------------------------------------------------------------------------
# the pipeline of a command line


def _newest_checkpoint() -> Path | None:
    found = [p for p in Path.cwd().glob("outputs/*/runs/*/checkpoints/last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def default_model_path() -> Path | None:
    """:func:`portraitseg.models.checkpoint.default_model_path`, imported on first use."""
    from portraitseg.models.checkpoint import default_model_path as find

    return find()


def missing_model_message() -> str:
    from portraitseg.models.checkpoint import DEFAULT_MODEL

    newest = _newest_checkpoint()
    hint = (f" (the newest here is {newest.relative_to(Path.cwd())})" if newest else
            "; train one first, e.g. `python train.py experiment=demo` (a few minutes on CPU)")
    return (
        f"no model to segment with: no --ckpt given and no bundled default model ({DEFAULT_MODEL} "
        "is not installed). Pass --ckpt outputs/<task>/runs/<time>/checkpoints/last.ckpt, the "
        f"checkpoint `python train.py ...` writes{hint}, or a weights file exported with "
        "`python -m portraitseg.models.checkpoint --ckpt <file.ckpt> --out <model.pt>`"
    )


def pick_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to this PyTorch; use --device cpu")
    return torch.device(name)


def _model_file(ckpt: str | None) -> str | Path:
    """``--ckpt``: the model file (the bundled one if none is given).

    Raises:
        UsageError: ``--ckpt`` empty, or no model given and none bundled.
    """
    if ckpt is not None and not ckpt.strip():  # e.g. --ckpt "$(ls ... | head -1)" found nothing
        raise UsageError("--ckpt is empty. " + missing_model_message())
    if ckpt is not None and ckpt != "default":
        return ckpt
    path = default_model_path()
    if path is None:
        raise UsageError(missing_model_message())
    return path


def render_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The preset values a command line replaces (``--strength`` also clears a preset's ``sigma``,
    which would override it)."""
    overrides = {key: value for key in ("strength", "falloff", "feather", "highlights")
                 if (value := getattr(args, key)) is not None}
    if args.strength is not None:
        overrides["sigma"] = None
    return overrides


def check_preset(name: str, overrides: dict[str, Any]) -> None:
    """The preset ``name`` exists and its values with ``overrides`` are in range.

    Raises:
        UsageError: naming the preset file and the value.
    """
    from portraitseg.presets import PresetError, load_preset

    try:
        options = load_preset(name)
    except PresetError as err:
        raise UsageError(f"--render: {err}") from None
    check_render_options({**options, **overrides}, f"--render {name} (conf/render/{name}.yaml)")


def build_job(args: argparse.Namespace) -> Job:
    """The pipeline of a command line (:meth:`PortraitPipeline.from_pretrained`) and its output
    options; :class:`UsageError` if unusable. The numeric options were range-checked by the
    parser (:func:`add_parser`), the preset's values here."""
    model = _model_file(args.ckpt)
    if args.person_ckpt is not None and not args.person_ckpt.strip():
        raise UsageError("--person-ckpt is empty: pass a 2-class person segmenter's checkpoint or "
                         "weights file, or leave the option out")
    overrides = render_overrides(args)
    check_preset(args.render, overrides)
    device = pick_device(args.device)
    options: dict[str, Any] = {"tta": args.tta, "max_pixels": args.max_pixels,
                               "people": "all" if args.all_people else "main"}
    if args.subject:
        options["subject"] = args.subject
    if args.model_size:
        options["model_size"] = args.model_size
    from portraitseg.pipeline import PipelineError, PortraitPipeline

    try:
        pipeline = PortraitPipeline.from_pretrained(
            model, args.render, device, render_options=overrides, keep=args.keep,
            person_model=args.person_ckpt or None, threads=args.threads, **options)
    except (FileNotFoundError, InputError, PipelineError) as err:  # CheckpointError is an InputError
        raise UsageError(str(err)) from None
    except ValueError as err:  # the renderer's own checks of the preset's values
        raise UsageError(f"--render {args.render}: {err}") from None
    return Job(pipeline, args.max_pixels, args.quality, list(pipeline.notes), focus=args.focus)


# --------------------------------------------------------------------------------------------
# the command


def run(args: argparse.Namespace) -> int:
    """``portraitseg render``; returns the exit status."""
    import signal

    from portraitseg.runtime import prefer_passive_wait

    prefer_passive_wait()  # before PyTorch is imported: OpenMP reads it once

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds like Ctrl-C: the current photo's placeholders are removed

    import threading

    main_thread = threading.current_thread() is threading.main_thread()  # signals: main thread only
    previous = signal.signal(signal.SIGTERM, terminated) if main_thread else None
    try:
        return _run(args)
    except UsageError as err:
        say(f"portraitseg render: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        say("portraitseg render: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _run(args: argparse.Namespace) -> int:
    if args.watch:
        return watch_folder(args, build_job, UsageError)
    outdir = Path(args.output).expanduser()
    items, missing, skipped = expand_inputs(args.inputs, args.recursive, outdir)
    if skipped and not args.quiet:
        say(f"note: skipped {skipped} file(s) in {outdir} named like earlier outputs (*{PORTRAIT_TAG}*, "
             f"*{STAGES_TAG}*); name them explicitly to render them", file=sys.stderr)
    if not items:
        what = ", ".join(repr(s) for s in missing) if missing else "the given folders hold no images"
        raise UsageError(f"no input images: nothing matched {what} (image suffixes: "
                         f"{' '.join(IMAGE_SUFFIXES)}; use --recursive for sub-folders)")
    photos, clips = split_clips(items)  # clips: portraitseg.cli.video, after the photos
    loop = PhotoLoop(args, photos, outdir)
    clip_status = (0, 0)
    try:
        loop.read_ahead(args.max_pixels, 1)  # the first photo is decoded while PyTorch is imported
        job = start_job(args, outdir, build_job, UsageError)
        namer = OutputNamer([p for p, _ in items], args.overwrite)
        for spec in missing:
            say(f"error: {spec}: no such file, folder or matching pattern", file=sys.stderr)
        loop.failed = len(missing)
        start = time.perf_counter()
        progress = progress_bar(len(photos), args.quiet)
        task = progress.add_task("", total=len(photos)) if progress else None
        if progress:
            progress.start()
        try:
            loop.render_all(job, namer, progress, task)
            if progress:
                progress.stop()
            clip_status = render_clips(job, clips, outdir, namer, args)
        finally:
            loop.close()
            namer.release()  # an interrupted run leaves no empty placeholder behind
            if progress:
                progress.stop()
    finally:
        loop.close()
    total = len(items) + len(missing)
    failed = loop.failed + clip_status[0]
    if not args.quiet or failed:
        say(f"rendered {total - failed} of {total} input(s) into {outdir} in "
             f"{time.perf_counter() - start:.1f} s"
             + (f"; {failed} failed (see the error lines above)" if failed else ""), file=sys.stderr)
    return video_exit(loop.failed, clip_status)


# --------------------------------------------------------------------------------------------
# argument parser

EPILOG = """\
Outputs go to OUTDIR (default ./portraits) as <stem>_portrait<ext> in the input's format and size
(formats other than jpg/png/webp/bmp/tif are written as .png); images found in sub-folders with
--recursive keep their sub-folder under OUTDIR. EXIF orientation is applied (outputs are upright).
An existing file is never replaced without --overwrite (a numeric suffix _1, _2... is added
instead), and an input is never replaced at all.

classes for --keep (names, ids or groups, comma-separated):
{classes}
{groups}

exit status: 0 all inputs rendered, 1 some failed (one "error:" line each on stderr),
2 usage error (no inputs matched, unknown class, no model).

examples:
  portraitseg render photo.jpg --ckpt outputs/demo/runs/<time>/checkpoints/last.ckpt
  portraitseg render photos/ -o out/ --stages --render gaussian --strength 0.02
  portraitseg render 'shots/*.JPG' --keep hair,skin --subject face --tta
"""


def _epilog() -> str:
    """:data:`EPILOG` with the class names and groups filled in."""
    return EPILOG.format(
        classes=textwrap.fill(", ".join(f"{i} {n}" for i, n in enumerate(CLASS_NAMES)), 96,
                              initial_indent="  ", subsequent_indent="  "),
        groups=textwrap.fill(
            "groups: " + ", ".join(f"{g} ({'+'.join(CLASS_NAMES[c] for c in ids)})"
                                   for g, ids in F1_GROUPS.items())
            + ", face (all but background and hair)", 96, initial_indent="  ", subsequent_indent="    "),
    )


def _add_main_arguments(parser: argparse.ArgumentParser, presets: list[str], default_preset: str) -> None:
    """The inputs, the output folder, the models, the preset and what is kept sharp."""
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image files, folders (their images) or glob patterns ('photos/*.jpg')")
    parser.add_argument("-o", "--output", default="portraits", metavar="OUTDIR",
                        help="output folder (default: ./portraits)")
    parser.add_argument("--ckpt", metavar="PATH",
                        help="segmenter: a checkpoint from `python train.py` (.../checkpoints/last.ckpt) "
                             "or an exported weights file (default: the bundled model, if installed)")
    parser.add_argument("--render", default=default_preset, choices=presets or None, metavar="PRESET",
                        help=f"render preset from conf/render/ ({', '.join(presets) or 'none found'}; "
                             f"default: {default_preset})")
    parser.add_argument("--keep", metavar="CLASSES",
                        help="classes kept sharp, e.g. hair,skin or face (default: the preset's; all but "
                             "background)")
    parser.add_argument("--subject", choices=("person", "person_grabcut", "face"),
                        help="person: keep the whole person sharp (the model's person matte; a model "
                             "without one falls back to person_grabcut; default); person_grabcut: the "
                             "face parse extended to the body by GrabCut; face: only the kept classes "
                             "(the paper)")
    parser.add_argument("--person-ckpt", metavar="PATH",
                        help="2-class person segmenter; subject = its person mask + the kept face classes")
    parser.add_argument("--focus", type=parse_focus, metavar="X,Y",
                        help="keep the person at this point sharp and blur everyone else: photo pixels "
                             "(640,360) or fractions of the width and height (0.5,0.4)")
    parser.add_argument("--all-people", action="store_true",
                        help="keep every person sharp (default: the main subjects; people far behind "
                             "them are blurred)")


def _add_override_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``render overrides`` group: single values replacing the preset's."""
    group = parser.add_argument_group("render overrides (on top of the preset)")
    group.add_argument("--strength", type=float_in(*RENDER_LIMITS["strength"]), metavar="X",
                       help=f"background blur sigma, fraction of the short side ({_span('strength')})")
    group.add_argument("--falloff", type=float_in(*RENDER_LIMITS["falloff"]), metavar="X",
                       help="distance over which the blur grows from the subject, fraction of the short side "
                            f"({_span('falloff')}; 0: uniform)")
    group.add_argument("--feather", type=float_in(*RENDER_LIMITS["feather"]), metavar="X",
                       help=f"alpha softening, fraction of the short side ({_span('feather')})")
    group.add_argument("--highlights", type=float_in(*RENDER_LIMITS["highlights"]), metavar="X",
                       help=f"bokeh highlight gain ({_span('highlights')}; 0: off)")


def _add_processing_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``processing`` group: extra outputs, files, quality, model size, device and threads."""
    run_group = parser.add_argument_group("processing")
    run_group.add_argument("--stages", action="store_true",
                           help="also write <stem>_stages.jpg: input | segmentation | foreground | portrait")
    run_group.add_argument("--save-alpha", action="store_true",
                           help="also write <stem>_alpha.png: the subject matte (8-bit, 255 = kept sharp, "
                                "the photo's size) to composite with")
    run_group.add_argument("--recursive", action="store_true", help="descend into sub-folders")
    run_group.add_argument("--overwrite", action="store_true",
                           help="replace existing outputs (inputs are never replaced)")
    run_group.add_argument("--quality", type=int_in(1, 100), default=95,
                           help="JPEG/WebP quality 1-100 (default: 95)")
    run_group.add_argument("--model-size", type=int_in(*MODEL_SIZE_RANGE), metavar="PX",
                           help=f"segment at this long side, {MODEL_SIZE_RANGE[0]}..{MODEL_SIZE_RANGE[1]} "
                                f"(default: the checkpoint's training size, else {DEFAULT_MODEL_SIZE})")
    run_group.add_argument("--tta", action="store_true",
                           help="average with the mirrored image's segmentation")
    run_group.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                           help="auto: cuda if available (default)")
    run_group.add_argument("--threads", type=int_in(1), metavar="N",
                           help="CPU threads of the model and the render (default: one per usable core, "
                                "or OMP_NUM_THREADS)")
    run_group.add_argument("--max-pixels", type=int_in(1), default=DEFAULT_MAX_PIXELS, metavar="N",
                           help=f"refuse larger photos (default: {DEFAULT_MAX_PIXELS:,})")
    run_group.add_argument("-q", "--quiet", action="store_true", help="print errors and warnings only")


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``portraitseg render`` and set ``func`` to :func:`run`."""
    presets = render_presets()
    default_preset = _default_preset()
    parser = subparsers.add_parser(
        "render",
        help="render shallow depth-of-field portraits of photos",
        description="Keep the subject sharp and blur the background like a wide-aperture lens.",
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_main_arguments(parser, presets, default_preset)
    _add_override_arguments(parser)
    _add_processing_arguments(parser)
    add_video_arguments(parser)
    add_watch_arguments(parser)
    parser.set_defaults(func=run)
    return parser
