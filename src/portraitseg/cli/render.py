"""``portraitseg render``: photos in, shallow depth-of-field portraits out.

For each input: decode once at full resolution (EXIF-upright, :func:`portraitseg.io.read_image`)
and run :class:`portraitseg.pipeline.PortraitPipeline` on it (both segmentation passes, the
subject alpha and the render); this module only parses arguments, handles files and reports. The
output keeps the input's file format and size; ``--save-alpha`` also writes the subject alpha.

Render options come from the Hydra group ``conf/render/`` (``--render PRESET``, composed through
``conf/render.yaml``); ``--strength``, ``--falloff``, ``--feather``, ``--highlights`` override
single values of the preset.

Exit status: 0 every input rendered, 1 some inputs failed (one ``error:`` line each on stderr;
the others are still rendered), 2 usage errors (no input matched, unknown class, no model).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import re
import secrets
import sys
import textwrap
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from portraitseg.classes import CLASS_NAMES, F1_GROUPS, NUM_CLASSES, class_ids
from portraitseg.cli.args import float_in, int_in
from portraitseg.config import DEFAULT_MAX_PIXELS  # --max-pixels default: the one limit
from portraitseg.io import (
    IMAGE_SUFFIXES,
    WRITE_FORMATS,
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

if TYPE_CHECKING:  # PyTorch is imported when a model is loaded, not for --help or usage errors
    import torch

#: File suffixes picked up from folders are :data:`portraitseg.io.IMAGE_SUFFIXES` (explicit files
#: and glob matches are tried whatever their suffix, so a misnamed file gets a clear per-file
#: error instead of being skipped); outputs keep the input's format when it is one of
#: :data:`portraitseg.io.WRITE_FORMATS`, other inputs (e.g. .gif) give a .png.

#: Default model input size when the checkpoint does not record its training size.
DEFAULT_MODEL_SIZE = 256
#: Long side of each panel of the --stages figure (smaller photos are not upscaled).
STAGES_PANEL = 768
PORTRAIT_TAG = "_portrait"
STAGES_TAG = "_stages"
ALPHA_TAG = "_alpha"
_OUTPUT_NAME = re.compile(
    rf"({re.escape(PORTRAIT_TAG)}|{re.escape(STAGES_TAG)}|{re.escape(ALPHA_TAG)})(_\d+)?$")


class UsageError(ValueError):
    """The command line cannot be run as given (exit status 2)."""


#: Allowed ranges of the numeric render options, checked once before any photo is read, for the
#: command-line overrides (by argparse) and for every value of the composed preset alike; the
#: renderer's own checks (e.g. ``highlight_threshold < 1``) still apply on top.
RENDER_LIMITS: dict[str, tuple[float, float]] = {
    "strength": (0.0, 1.0),  # fraction of the short side
    "sigma": (0.0, 10_000.0),  # pixels (null: use strength)
    "falloff": (0.0, 10.0),  # fraction of the short side
    "falloff_levels": (2, 32),
    "feather": (0.0, 1.0),
    "refine": (0.0, 1.0),
    "refine_eps": (1e-12, 1.0),
    "highlights": (0.0, 100.0),
    "highlight_threshold": (0.0, 1.0),
}
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
        from omegaconf import OmegaConf

        for item in OmegaConf.load(entry).get("defaults") or []:
            if not isinstance(item, str) and "render" in item:
                return str(item["render"])
    return "disc"


# --------------------------------------------------------------------------------------------
# inputs and outputs


def expand_inputs(
    specs: Sequence[str], recursive: bool = False, outdir: Path | None = None
) -> tuple[list[tuple[Path, Path]], list[str], int]:
    """Expand files, folders and glob patterns into ``(path, relative_output_dir)`` pairs.

    Folders contribute the files with an image suffix (:data:`IMAGE_SUFFIXES`), sorted, and with
    ``recursive`` those of their sub-folders (the sub-folder is kept under the output folder).
    Glob patterns (``*``, ``?``, ``[``) are expanded here too, for shells that do not; ``**``
    matches sub-folders with ``recursive``. Explicit files and glob matches are taken whatever
    their suffix. Files inside ``outdir`` named like this command's outputs (``*_portrait*``,
    ``*_stages*``) are skipped when folders are expanded, so a re-run does not render portraits
    of portraits. Duplicates are dropped.

    Returns:
        ``(items, missing, skipped)``: the inputs in order, the specs that matched nothing, and
        the number of earlier outputs skipped.
    """
    items: list[tuple[Path, Path]] = []
    missing: list[str] = []
    skipped = 0
    seen: set[Path] = set()
    out_resolved = outdir.resolve() if outdir is not None else None

    def add(path: Path, rel: Path) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            items.append((path, rel))

    def add_folder(folder: Path) -> None:
        nonlocal skipped
        for path in sorted(folder.glob("**/*" if recursive else "*")):
            if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            if out_resolved is not None and _OUTPUT_NAME.search(path.stem) and (
                path.resolve().parent == out_resolved or out_resolved in path.resolve().parents
            ):
                skipped += 1
                continue
            add(path, path.parent.relative_to(folder))

    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            add_folder(path)  # an empty folder is not an error: there is nothing to do
        elif path.exists():
            add(path, Path())
        elif glob.has_magic(spec):
            matches = sorted(glob.glob(os.path.expanduser(spec), recursive=recursive))
            if not matches:
                missing.append(spec)
            for match in matches:
                m = Path(match)
                if m.is_dir():
                    add_folder(m)
                elif m.is_file():
                    add(m, Path())
        else:
            missing.append(spec)
    return items, missing, skipped


def _output_suffix(path: Path) -> str:
    return path.suffix if path.suffix.lower() in WRITE_FORMATS else ".png"


class OutputNamer:
    """Chooses output paths that never hit an input, nor an existing file unless ``overwrite``.

    ``<stem>_portrait<ext>`` (and ``<stem>_stages.jpg``); if taken, ``<stem>_portrait_1<ext>``,
    ``_2``... (the portrait and its stages figure share the number). A file written earlier in
    the same run is never replaced, even with ``overwrite``.

    A new name is reserved on disk the moment it is chosen: an empty placeholder created with
    ``O_CREAT | O_EXCL``, which exactly one process can win, so two runs writing into one folder
    at once never pick the same name, and locked (``flock``) while this process lives. The
    render then replaces the placeholders atomically (:func:`portraitseg.io.atomic_write_all`);
    :meth:`release` removes the placeholders of outputs that were not written. An empty file
    under an output name that nobody holds locked is the debris of a run that was killed: it is
    reused, so a re-run does not number its outputs ``_1``.
    """

    def __init__(self, inputs: Iterable[Path], overwrite: bool) -> None:
        self.protected = {p.resolve() for p in inputs}
        self.claimed: set[Path] = set()
        self.overwrite = overwrite
        self.placeholders: dict[Path, int] = {}  # path -> open, locked descriptor

    @staticmethod
    def _lock(fd: int) -> bool:
        """Lock a placeholder for this process; False if another live process holds it."""
        try:
            import fcntl
        except ImportError:  # no flock (Windows): placeholders are never taken over
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        return True

    @staticmethod
    def _placeholder(path: Path) -> str | None:
        """``"held"``: an empty file a live run holds locked (its placeholder); ``"debris"``: an
        empty file nobody holds (left by a run that was killed); None: anything else."""
        try:
            if path.is_symlink() or not path.is_file() or path.stat().st_size != 0:
                return None
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return None
        try:
            import fcntl
        except ImportError:
            os.close(fd)
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return "held"
        finally:
            os.close(fd)  # closing drops the probe's lock
        return "debris"

    def _free(self, path: Path) -> bool:
        key = path.resolve()
        if key in self.protected or key in self.claimed:
            return False
        if os.path.lexists(path):
            state = self._placeholder(path)
            if state is not None:
                return state == "debris"
            if not self.overwrite or not path.is_file():
                return False
            try:  # a hard link or symlink to an input is the input
                if any(key.samefile(p) for p in self.protected if p.exists()):
                    return False
            except OSError:
                return False
        return True

    def _reserve(self, path: Path) -> bool:
        """Claim ``path`` on disk: an existing file (``overwrite`` only, checked by :meth:`_free`)
        is taken as is; a new one is created empty, exclusively (False if another process won)."""
        if os.path.lexists(path) and self._placeholder(path) == "debris":
            try:  # take the killed run's placeholder over
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW)
            except OSError:
                return False
            if self._lock(fd) and os.fstat(fd).st_size == 0:
                self.placeholders[path] = fd
                return True
            os.close(fd)
            return False
        if self.overwrite and os.path.lexists(path):
            return True
        # created locked under a private name, then linked to its name: link() fails if the name
        # exists (exclusive, like O_EXCL), and the placeholder is never seen unlocked
        private = path.with_name(f".{path.name}.{secrets.token_hex(4)}.{os.getpid()}.tmp")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            self._lock(fd)
            os.link(private, path)
        except FileExistsError:  # another run's placeholder or file appeared since _free: it wins
            os.close(fd)
            return False
        except BaseException:
            os.close(fd)
            raise
        finally:
            with contextlib.suppress(OSError):
                private.unlink()
        self.placeholders[path] = fd
        return True

    def _unreserve(self, path: Path) -> None:
        fd = self.placeholders.pop(path, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                if path.stat().st_size == 0:
                    path.unlink()
            os.close(fd)

    def __call__(self, src: Path, folder: Path, stages: bool) -> tuple[Path, Path | None]:
        """``(portrait, stages figure or None)`` for ``src`` (see :meth:`reserve`)."""
        portrait, figure, _ = self.reserve(src, folder, stages)
        return portrait, figure

    def reserve(
        self, src: Path, folder: Path, stages: bool, alpha: bool = False
    ) -> tuple[Path, Path | None, Path | None]:
        """``(portrait, stages figure or None, alpha matte or None)``, all sharing one number
        (``<stem>_alpha<num>.png`` is the matte), each reserved on disk."""
        ext = _output_suffix(src)
        n = 0
        while True:
            num = f"_{n}" if n else ""
            portrait = folder / f"{src.stem}{PORTRAIT_TAG}{num}{ext}"
            extras = [folder / f"{src.stem}{STAGES_TAG}{num}.jpg" if stages else None,
                      folder / f"{src.stem}{ALPHA_TAG}{num}.png" if alpha else None]
            wanted = [portrait, *(p for p in extras if p is not None)]
            if all(self._free(p) for p in wanted):
                taken: list[Path] = []
                for path in wanted:
                    if not self._reserve(path):
                        break
                    taken.append(path)
                else:
                    self.claimed.update(p.resolve() for p in wanted)
                    return portrait, extras[0], extras[1]
                for path in taken:
                    self._unreserve(path)
            n += 1

    def written(self, *paths: Path | None) -> None:
        """Mark outputs as written: their placeholders are no longer ours to remove."""
        for path in paths:
            fd = self.placeholders.pop(path, None)
            if fd is not None:
                os.close(fd)

    def release(self, *paths: Path | None) -> None:
        """Remove the placeholders of ``paths`` (all of them if none are given) still empty."""
        for path in list(paths or self.placeholders):
            if path is not None:
                self._unreserve(path)


# --------------------------------------------------------------------------------------------
# model and render configuration


@dataclass
class Model:
    """A loaded segmenter with what the CLI needs to run it."""

    net: torch.nn.Module
    info: dict[str, Any]
    size: int
    classes: int
    helen: bool = field(init=False)

    def __post_init__(self) -> None:
        self.helen = list(self.info.get("class_names") or []) == list(CLASS_NAMES)


@dataclass
class Job:
    """Everything :func:`render_file` needs, fixed for a run."""

    model: Model
    pipeline: torch.nn.Module  # portraitseg.pipeline.PortraitPipeline
    max_pixels: int
    quality: int
    device: torch.device


def _stored_size(info: dict[str, Any]) -> int | None:
    size = info.get("image_size")
    if isinstance(size, (list, tuple)) and size:
        return int(max(size))
    if isinstance(size, (int, float)) and size > 0:
        return int(size)
    return None


def _newest_checkpoint() -> Path | None:
    found = [p for p in Path.cwd().glob("outputs/*/runs/*/checkpoints/last.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def load_segmenter(path: str | os.PathLike, map_location: Any = "cpu") -> tuple[torch.nn.Module, dict]:
    """:func:`portraitseg.models.checkpoint.load_segmenter`, imported on first use (PyTorch)."""
    from portraitseg.models.checkpoint import load_segmenter as load

    return load(path, map_location=map_location)


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


def load_model(path: str | os.PathLike | None, device: torch.device, model_size: int | None) -> Model:
    """Load ``--ckpt`` (None or ``default``: the bundled model) onto ``device``.

    Raises:
        UsageError: no model, or the file is missing or not a portraitseg checkpoint.
    """
    if path is not None and not str(path).strip():  # e.g. --ckpt "$(ls ... | head -1)" found nothing
        raise UsageError("--ckpt is empty. " + missing_model_message())
    if path is None or str(path) == "default":
        path = default_model_path()
        if path is None:
            raise UsageError(missing_model_message())
    try:
        net, info = load_segmenter(path, map_location="cpu")
    except (FileNotFoundError, InputError) as err:  # CheckpointError is an InputError
        raise UsageError(str(err)) from None
    size = model_size or _stored_size(info) or DEFAULT_MODEL_SIZE
    classes = int(info.get("model", {}).get("classes") or len(info.get("class_names") or ()) or NUM_CLASSES)
    return Model(net.to(device).eval(), info, int(size), classes)


def render_config(preset: str, overrides: dict[str, Any]) -> dict[str, Any]:
    """The options of render preset ``preset`` (resolved among the package's presets only:
    :func:`portraitseg.presets.load_preset`) with ``overrides`` applied (None values are skipped,
    except ``sigma``, where None means "use strength").

    Returns a dict of the renderer's options with ``_target_``.
    """
    from portraitseg.presets import PresetError, load_preset

    try:
        node = load_preset(preset)
    except PresetError as err:
        raise UsageError(f"--render: {err}") from None
    for key, value in overrides.items():
        if value is not None or key == "sigma":
            node[key] = value
    check_render_options(node, f"--render {preset} (conf/render/{preset}.yaml)")
    return node


def build_renderer(node: Any, keep: tuple[int, ...]) -> tuple[torch.nn.Module, str, dict[str, Any]]:
    """Instantiate the renderer of a preset's options (:func:`render_config`).

    Returns:
        ``(renderer, subject, person_options)``: the preset's ``subject`` (``person`` | ``face``)
        and its ``person`` options, stored on the :class:`PortraitRenderer`.
    """
    import copy

    from portraitseg.presets import PresetError
    from portraitseg.presets import build_renderer as instantiate_renderer

    options = copy.deepcopy(dict(node))
    options["keep"] = list(keep)
    try:
        renderer = instantiate_renderer(options)
    except PresetError as err:
        raise UsageError(str(err)) from None
    except Exception as err:  # noqa: BLE001 - hydra wraps the renderer's ValueError
        cause = err.__cause__ or err
        raise UsageError(f"render options: {cause}") from None
    return renderer, renderer.subject, dict(renderer.person)


def parse_keep(spec: str | None, model: Model) -> tuple[int, ...] | None:
    """``--keep`` -> class ids of ``model`` (None: the preset's choice)."""
    if spec is None:
        return None
    if model.helen:
        try:
            return class_ids(spec)
        except ValueError as err:
            raise UsageError(f"--keep {spec!r}: {err}") from None
    names = list(model.info.get("class_names") or [])
    ids = set()
    for item in spec.split(","):
        item = item.strip()
        if item.isdigit() and int(item) < model.classes:
            ids.add(int(item))
        elif item in names:
            ids.add(names.index(item))
        elif item:
            raise UsageError(f"--keep {spec!r}: unknown class {item!r}; this model's classes: "
                             f"{', '.join(names)} (or ids 0..{model.classes - 1})")
    if not ids:
        raise UsageError(f"--keep {spec!r}: empty class selection")
    return tuple(sorted(ids))


def pick_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda: no CUDA device is available to this PyTorch; use --device cpu")
    return torch.device(name)


# --------------------------------------------------------------------------------------------
# segmentation at model resolution


def segment(model: Model, rgb: np.ndarray, tta: bool = False) -> torch.Tensor:
    """Class probabilities ``(1, K, h, w)`` of a photo ``(H, W, 3)`` uint8 at model resolution
    (``h, w``: the photo's size scaled so its long side is ``model.size``; letterbox cropped):
    pass 1 of the pipeline (:func:`portraitseg.pipeline.segment_letterboxed`)."""
    import torch

    from portraitseg.classes import FLIP_PERMUTATION
    from portraitseg.pipeline import segment_letterboxed

    device = next(model.net.parameters()).device
    image = torch.from_numpy(rgb).to(device).permute(2, 0, 1)[None].float().div_(255)
    perm = torch.tensor(FLIP_PERMUTATION, device=device) if model.helen else None
    return segment_letterboxed(model.net, image, model.size, tta=tta, flip_perm=perm)[0]


# --------------------------------------------------------------------------------------------
# the 4-panel figure


def _checkerboard(h: int, w: int, cell: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    light = ((yy // cell + xx // cell) % 2 == 0)[..., None]
    return np.where(light, 200, 150).astype(np.float32) * np.ones(3, np.float32)


def panel_size(h: int, w: int, panel: int = STAGES_PANEL) -> tuple[int, int]:
    """``(h', w')`` of a stages panel for an ``h x w`` photo: long side ``panel``, never upscaled."""
    scale = min(1.0, panel / max(h, w))
    return max(1, round(h * scale)), max(1, round(w * scale))


def stages_figure(
    rgb: np.ndarray, label: np.ndarray, alpha: np.ndarray, portrait: np.ndarray, panel: int = STAGES_PANEL
) -> np.ndarray:
    """The paper's figure: input | segmentation overlay | extracted foreground | portrait.

    Args:
        rgb, portrait: ``(H, W, 3)`` uint8; label: ``(h, w)`` class ids (any size, best the
            panel's: :func:`panel_size`);
        alpha: ``(H, W)`` float in [0, 1]; the foreground is drawn over a checkerboard.
        panel: long side of each panel (never upscaled).

    Returns:
        ``(24 + H', 4 W' + 3 gap, 3)`` uint8 with a caption strip on top.
    """
    import cv2

    from portraitseg.viz import overlay

    ph, pw = panel_size(*rgb.shape[:2], panel)

    def fit(a: np.ndarray, interp: int = cv2.INTER_AREA) -> np.ndarray:
        return a if a.shape[:2] == (ph, pw) else cv2.resize(a, (pw, ph), interpolation=interp)

    image = fit(rgb)
    seg = overlay(image, fit(label.astype(np.uint8), cv2.INTER_NEAREST))
    a = fit(alpha.astype(np.float32))[..., None]
    fg = (image.astype(np.float32) * a + _checkerboard(ph, pw) * (1 - a)).round().astype(np.uint8)
    panels = [image, seg, fg, fit(portrait)]
    captions = ["input", "segmentation", "foreground", "portrait"]
    gap = 4
    bar = 24
    out = np.full((bar + ph, 4 * pw + 3 * gap, 3), 255, np.uint8)
    for i, (p, text) in enumerate(zip(panels, captions, strict=True)):
        x0 = i * (pw + gap)
        out[bar:, x0 : x0 + pw] = p
        font_scale = 0.5 if pw >= 90 else 0.3
        cv2.putText(out, text, (x0 + 4, bar - 7), cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return out


# --------------------------------------------------------------------------------------------
# the command


def render_file(job: Job, src: Path, out: Path, figure: Path | None, alpha: Path | None = None) -> list[str]:
    """Render one photo into ``out`` (the stages figure into ``figure``, the 8-bit subject alpha
    into ``alpha``); returns warnings (e.g. that only the first frame of an animated GIF or
    multi-page TIFF was rendered, a fallback of the subject, how transparency was handled).

    The photo's colour profile is embedded in the portrait and the figure (the pixels are
    rendered in the photo's own colour space); a transparent photo is rendered composited on
    :data:`portraitseg.io.TRANSPARENT_BACKGROUND` and its portrait keeps the photo's alpha.
    All outputs of the photo are written together or none is
    (:func:`portraitseg.io.atomic_write_all`)."""
    import torch

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", MultiFrameWarning)
        photo = read_photo(src, max_pixels=job.max_pixels)
    notes = [str(w.message).removeprefix(f"{src}: ")
             for w in caught if issubclass(w.category, MultiFrameWarning)] + photo.notes
    with torch.inference_mode():
        return notes + _render(job, photo, out, figure, alpha)


def _render(job: Job, photo: Photo, out: Path, figure: Path | None, alpha_out: Path | None) -> list[str]:
    import torch
    import torch.nn.functional as F

    rgb = photo.rgb
    image = torch.from_numpy(rgb).to(job.device).permute(2, 0, 1)[None]  # uint8: the pipeline scales it
    result = job.pipeline(image)
    del image
    from portraitseg.pipeline import to_uint8

    notes = list(result.notes) + output_notes(photo, out)
    portrait = to_uint8(result.portrait[0])
    outputs = [(out, encode_image(out, portrait, job.quality, photo.icc_profile, photo.alpha))]
    if alpha_out is not None:
        outputs.append((alpha_out, encode_image(alpha_out, to_uint8(result.alpha[0, 0]))))
    if figure is not None:
        size = panel_size(*rgb.shape[:2])
        label = F.interpolate(result.parse, size=size, mode="bilinear", align_corners=False)[0].argmax(0)
        used = result.alpha[0, 0].float().cpu().numpy()
        fig = stages_figure(rgb, label.byte().cpu().numpy(), used, portrait)
        outputs.append((figure, encode_image(figure, fig, job.quality, photo.icc_profile)))
    atomic_write_all(outputs, check=check_image)
    return notes


def _error_text(err: BaseException) -> str:
    import torch

    if isinstance(err, (InputError, WriteError)):  # their messages name the file
        return str(err)
    if isinstance(err, (MemoryError, torch.cuda.OutOfMemoryError)) or "can't allocate memory" in str(err):
        return ("out of memory while rendering; lower --max-pixels to skip such photos, use "
                "--device cpu if the GPU is small, or downscale the photo")
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _say(text: str, file: Any = None) -> None:
    """``print`` that never fails on file names that are not valid UTF-8 (shown as ``\\xNN``)."""
    print(text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"), file=file)


def _progress(total: int, quiet: bool):
    if quiet or total < 2 or not sys.stderr.isatty():
        return None
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("rendering"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        TextColumn("{task.description}"), console=Console(stderr=True), transient=True,
    )


def run(args: argparse.Namespace) -> int:
    """``portraitseg render``; returns the exit status."""
    import signal

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds like Ctrl-C: the current photo's placeholders are removed

    import threading

    main_thread = threading.current_thread() is threading.main_thread()  # signals: main thread only
    previous = signal.signal(signal.SIGTERM, terminated) if main_thread else None
    try:
        return _run(args)
    except UsageError as err:
        _say(f"portraitseg render: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _say("portraitseg render: interrupted", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def build_job(args: argparse.Namespace) -> Job:
    """Load the model(s) and the render preset of a command line; :class:`UsageError` if unusable.

    The numeric options were range-checked by the parser (:func:`add_parser`)."""
    device = pick_device(args.device)
    model = load_model(args.ckpt, device, args.model_size)
    if args.person_ckpt is not None and not args.person_ckpt.strip():
        raise UsageError("--person-ckpt is empty: pass a 2-class person segmenter's checkpoint or "
                         "weights file, or leave the option out")
    person = load_model(args.person_ckpt, device, None) if args.person_ckpt else None
    if person is not None and person.classes != 2:
        raise UsageError(f"--person-ckpt {args.person_ckpt}: expected a 2-class person segmenter "
                         f"(background, person), this one has {person.classes} classes")
    keep = parse_keep(args.keep, model)

    overrides = {"strength": args.strength, "falloff": args.falloff, "feather": args.feather,
                 "highlights": args.highlights}
    if args.strength is not None:
        overrides["sigma"] = None  # a preset's absolute sigma would override --strength
    node = render_config(args.render, overrides)
    if keep is None:  # the preset's: null (all but background), "hair,skin" or [hair, skin]
        preset_keep = node.get("keep")
        if preset_keep is None:
            keep = tuple(range(1, model.classes))
        else:
            spec = preset_keep if isinstance(preset_keep, str) else ",".join(map(str, preset_keep))
            keep = parse_keep(spec, model)
    if max(keep) >= model.classes:
        raise UsageError(f"--keep: class ids {keep} do not exist in this {model.classes}-class model")
    renderer, preset_subject, _ = build_renderer(node, keep)

    from portraitseg.pipeline import PipelineError, PortraitPipeline

    try:
        pipeline = PortraitPipeline(
            model.net, renderer, subject=args.subject or preset_subject, keep=keep, tta=args.tta,
            model_size=model.size, person_model=None if person is None else person.net,
            person_model_size=DEFAULT_MODEL_SIZE if person is None else person.size,
            class_names=model.info.get("class_names") or None, max_pixels=args.max_pixels,
        ).to(device).eval()
    except PipelineError as err:
        raise UsageError(str(err)) from None
    for note in pipeline.notes:
        _say(f"warning: {note}", file=sys.stderr)
    return Job(model, pipeline, args.max_pixels, args.quality, device)


def _run(args: argparse.Namespace) -> int:
    outdir = Path(args.output).expanduser()
    items, missing, skipped = expand_inputs(args.inputs, args.recursive, outdir)
    if skipped and not args.quiet:
        _say(f"note: skipped {skipped} file(s) in {outdir} named like earlier outputs (*{PORTRAIT_TAG}*, "
             f"*{STAGES_TAG}*); name them explicitly to render them", file=sys.stderr)
    if not items:
        what = ", ".join(repr(s) for s in missing) if missing else "the given folders hold no images"
        raise UsageError(f"no input images: nothing matched {what} (image suffixes: "
                         f"{' '.join(IMAGE_SUFFIXES)}; use --recursive for sub-folders)")
    job = build_job(args)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(f"-o {outdir}: cannot create the output folder ({err.strerror or err})") from None

    namer = OutputNamer([p for p, _ in items], args.overwrite)
    for spec in missing:
        _say(f"error: {spec}: no such file, folder or matching pattern", file=sys.stderr)
    failed = len(missing)
    start = time.perf_counter()
    progress = _progress(len(items), args.quiet)
    task = progress.add_task("", total=len(items)) if progress else None
    if progress:
        progress.start()
    try:
        for src, rel in items:
            if progress:
                progress.update(task, description=src.name)
            t0 = time.perf_counter()
            try:
                folder = outdir / rel
                folder.mkdir(parents=True, exist_ok=True)
                out, figure, alpha = namer.reserve(src, folder, args.stages, args.save_alpha)
                notes = render_file(job, src, out, figure, alpha)
                namer.written(out, figure, alpha)
            except Exception as err:  # noqa: BLE001 - one bad file must not stop the others
                namer.release()
                failed += 1
                # InputError and WriteError messages start with the file name already
                where = "" if isinstance(err, (InputError, WriteError)) else f"{src}: "
                _say(f"error: {where}{_error_text(err)}", file=sys.stderr)
            else:
                for warning in notes:
                    _say(f"warning: {src}: {warning}", file=sys.stderr)
                if not args.quiet:
                    extra = "".join(f" + {p}" for p in (figure, alpha) if p is not None)
                    _say(f"{src} -> {out}{extra} ({time.perf_counter() - t0:.2f} s)")
            if progress:
                progress.advance(task)
    finally:
        namer.release()  # an interrupted run leaves no empty placeholder behind
        if progress:
            progress.stop()
    total = len(items) + len(missing)
    if not args.quiet or failed:
        _say(f"rendered {total - failed} of {total} input(s) into {outdir} in "
             f"{time.perf_counter() - start:.1f} s"
             + (f"; {failed} failed (see the error lines above)" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


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


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register ``portraitseg render`` and set ``func`` to :func:`run`."""
    presets = render_presets()
    default_preset = _default_preset()
    parser = subparsers.add_parser(
        "render",
        help="render shallow depth-of-field portraits of photos",
        description="Keep the subject sharp and blur the background like a wide-aperture lens.",
        epilog=EPILOG.format(
            classes=textwrap.fill(", ".join(f"{i} {n}" for i, n in enumerate(CLASS_NAMES)), 96,
                                  initial_indent="  ", subsequent_indent="  "),
            groups=textwrap.fill(
                "groups: " + ", ".join(f"{g} ({'+'.join(CLASS_NAMES[c] for c in ids)})"
                                       for g, ids in F1_GROUPS.items())
                + ", face (all but background and hair)", 96, initial_indent="  ", subsequent_indent="    "),
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
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
    run_group.add_argument("--max-pixels", type=int_in(1), default=DEFAULT_MAX_PIXELS, metavar="N",
                           help=f"refuse larger photos (default: {DEFAULT_MAX_PIXELS:,})")
    run_group.add_argument("-q", "--quiet", action="store_true", help="print errors and warnings only")
    parser.set_defaults(func=run)
    return parser
