"""Dataset layouts on disk -> lists of samples per split.

Three layouts are read, auto-detected (``layout="auto"``) or forced:

- ``smith``: the original Smith et al. release (``SmithCVPR2013_dataset_resized/``):
  ``images/<id>.jpg``, eleven soft maps ``labels/<id>/<id>_lbl00.png .. _lbl10.png`` (merged by
  per-pixel argmax), split lists ``exemplars.txt`` (train), ``tuning.txt`` (val), ``testing.txt``
  (test).
- ``helenstar``: HELEN* (Lin et al. 2019): ``train.txt`` / ``test.txt`` with ``"<image> <label>"``
  per line (paths relative to the root), 8-bit class-id PNG labels.
- ``folder``: ``images/`` + ``masks/`` matched by file stem, either at the root (one split,
  ``train``) or under ``train/``, ``val/``, ``test/``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from portraitseg.classes import NUM_CLASSES
from portraitseg.io import IMAGE_SUFFIXES

LAYOUTS = ("smith", "helenstar", "folder")
SMITH_SPLITS = {"train": "exemplars.txt", "val": "tuning.txt", "test": "testing.txt"}
SMITH_DIRNAME = "SmithCVPR2013_dataset_resized"

GET_HELEN = (
    "Get Helen with `python -m portraitseg.data download helen --url <archive URL or local path> "
    "--dest data/helen` (HELEN*, the Smith et al. release, or an images/ + masks/ folder all work), "
    "then run `python train.py data=helen data.root=data/helen`; or train on the embedded "
    "synthetic portraits with `data=synthetic`."
)


class DatasetNotFoundError(FileNotFoundError):
    """No dataset of a known layout at the given root."""


@dataclass(frozen=True)
class Sample:
    """One image and its label: a class-id PNG, or (Smith) the eleven soft maps in class order."""

    id: str
    image: Path
    label: Path | tuple[Path, ...] | None


def check_root(root: Path) -> None:
    """Raise :class:`DatasetNotFoundError` unless ``root`` is a folder (saying what it is instead)."""
    if root.is_dir():
        return
    if root.exists():
        raise DatasetNotFoundError(f"dataset root {root.resolve()} is a file, not a folder: pass the "
                                   "folder that holds the dataset")
    raise DatasetNotFoundError(f"dataset root {root.resolve()} does not exist. {GET_HELEN}")


def detect_layout(root: str | os.PathLike) -> str:
    """Name the layout found at ``root``; raise :class:`DatasetNotFoundError` if none fits."""
    root = Path(root)
    check_root(root)
    if (root / SMITH_DIRNAME).is_dir() or (
        (root / "labels").is_dir() and any((root / f).is_file() for f in SMITH_SPLITS.values())
    ):
        return "smith"
    if (root / "train.txt").is_file() or (root / "test.txt").is_file():
        return "helenstar"
    if _folder_roots(root):
        return "folder"
    raise DatasetNotFoundError(
        f"no dataset layout recognised in {root.resolve()}: expected a Smith release "
        f"({SMITH_DIRNAME}/ or images/ + labels/ + exemplars.txt), HELEN* (train.txt/test.txt), or "
        f"images/ + masks/ folders. {GET_HELEN}"
    )


def discover(
    root: str | os.PathLike, layout: str = "auto", problems: list[str] | None = None
) -> dict[str, list[Sample]]:
    """List the samples of every split found at ``root`` (``{"train": [...], "test": [...]}``).

    Missing files are reported here, by name: an image without its label raises
    :class:`FileNotFoundError`, a malformed list line or two images sharing one mask (folder
    layout: ``a.jpg`` and ``a.png``) :class:`ValueError`. With ``problems`` given, each such
    problem is appended to it instead, the sample left out, and the listing goes on (for
    ``python -m portraitseg.data check``, which reports every problem).
    """
    root = Path(root)
    if layout == "auto":
        layout = detect_layout(root)
    elif layout not in LAYOUTS:
        raise ValueError(f"unknown data layout {layout!r}; known: auto, {', '.join(LAYOUTS)}")
    else:
        check_root(root)
    reader = {"smith": _smith, "helenstar": _helenstar, "folder": _folder}[layout]
    splits = reader(root, _Problems(problems))
    if not any(splits.values()) and not problems:  # with problems, they say why
        raise DatasetNotFoundError(f"the {layout} layout at {root.resolve()} lists no samples")
    return splits


class _Problems:
    """Raise each problem (the default), or collect it in a list and go on."""

    def __init__(self, sink: list[str] | None) -> None:
        self.sink = sink

    def __call__(self, error: Exception) -> None:
        if self.sink is None:
            raise error
        self.sink.append(str(error))


def _smith(root: Path, problem: _Problems) -> dict[str, list[Sample]]:
    if (root / SMITH_DIRNAME).is_dir():
        root = root / SMITH_DIRNAME
    splits: dict[str, list[Sample]] = {}
    for split, list_name in SMITH_SPLITS.items():
        list_file = root / list_name
        if not list_file.is_file():
            continue
        samples = []
        for line in _lines(list_file):
            image_id = line.split(",")[-1].strip()  # "1 , 100032540_1" or a bare id
            try:
                image = _find_image(root / "images", image_id)
            except FileNotFoundError as err:
                problem(err)
                continue
            maps = tuple(
                root / "labels" / image_id / f"{image_id}_lbl{c:02d}.png" for c in range(NUM_CLASSES)
            )
            missing = [p for p in maps if not p.is_file()]
            if missing:
                problem(FileNotFoundError(
                    f"{list_file}: label maps missing for {image_id!r}, e.g. {missing[0]}"
                ))
                continue
            samples.append(Sample(image_id, image, maps))
        splits[split] = samples
    return splits


def _helenstar(root: Path, problem: _Problems) -> dict[str, list[Sample]]:
    splits: dict[str, list[Sample]] = {}
    for split in ("train", "val", "test"):
        list_file = root / f"{split}.txt"
        if list_file.is_file():
            splits[split] = read_pair_list(list_file, root, problem.sink)
    return splits


def read_pair_list(
    list_file: str | os.PathLike, root: str | os.PathLike, problems: list[str] | None = None
) -> list[Sample]:
    """Read ``"<image> <label>"`` lines (paths relative to ``root``) into samples.

    A malformed line (:class:`ValueError`) or a missing file (:class:`FileNotFoundError`) is
    raised, or with ``problems`` given appended to it and the line skipped.
    """
    list_file, root = Path(list_file), Path(root)
    problem = _Problems(problems)
    samples = []
    try:
        lines = _lines(list_file)
    except (OSError, UnicodeDecodeError) as err:
        problem(ValueError(f"{list_file}: cannot be read as a text list ({err})"))
        return samples
    for lineno, line in enumerate(lines, 1):
        parts = line.rsplit(maxsplit=1)
        if len(parts) != 2:
            problem(ValueError(f"{list_file}:{lineno}: expected '<image> <label>', got {line!r}"))
            continue
        image, label = root / parts[0], root / parts[1]
        if not image.is_file():
            problem(FileNotFoundError(f"{list_file}:{lineno}: image {image} does not exist"))
        elif not label.is_file():
            problem(FileNotFoundError(f"{list_file}:{lineno}: label {label} for {image.name} does not exist"))
        else:
            samples.append(Sample(image.stem, image, label))
    return samples


def _folder_roots(root: Path) -> dict[str, Path]:
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return {"train": root}
    return {
        split: root / split
        for split in ("train", "val", "test")
        if (root / split / "images").is_dir() and (root / split / "masks").is_dir()
    }


def _folder(root: Path, problem: _Problems) -> dict[str, list[Sample]]:
    splits: dict[str, list[Sample]] = {}
    for split, base in _folder_roots(root).items():
        masks = {p.stem: p for p in (base / "masks").iterdir() if p.suffix.lower() == ".png"}
        by_stem: dict[str, list[Path]] = {}
        for image in sorted((base / "images").iterdir()):
            if image.suffix.lower() in IMAGE_SUFFIXES:
                by_stem.setdefault(image.stem, []).append(image)
        samples = []
        for stem, images in by_stem.items():
            if len(images) > 1:
                problem(ValueError(
                    f"images {', '.join(str(p) for p in images)} share the name {stem!r} and so the one "
                    f"mask {base / 'masks' / (stem + '.png')}: rename or remove all but one"
                ))
            elif stem not in masks:
                problem(FileNotFoundError(
                    f"image {images[0]} has no mask: expected {base / 'masks' / (stem + '.png')}"
                ))
            else:
                samples.append(Sample(stem, images[0], masks[stem]))
        splits[split] = samples
    return splits


def _find_image(folder: Path, image_id: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        path = folder / f"{image_id}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"image {image_id!r} not found in {folder}")


def _lines(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
