"""``python -m portraitseg.data check ROOT``: counts, class histogram, sizes and every problem."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from portraitseg.argtypes import int_in
from portraitseg.classes import CLASS_NAMES, NUM_CLASSES
from portraitseg.data.layouts import LAYOUTS, DatasetNotFoundError, detect_layout, discover
from portraitseg.io import DEFAULT_MAX_PIXELS, InputError, MultiFrameWarning


@dataclass
class CheckReport:
    """What :func:`check_dataset` found: per-split counts, pixel histogram, sizes, problems."""

    root: Path
    layout: str
    counts: dict[str, int] = field(default_factory=dict)
    class_pixels: np.ndarray = field(default_factory=lambda: np.zeros(NUM_CLASSES, np.int64))
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    problems: list[str] = field(default_factory=list)
    #: person mattes checked (``--person``): their summed matte and pixel count (share = ratio)
    person: str | None = None
    person_sum: float = 0.0
    person_pixels: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(
    root: str | os.PathLike, layout: str = "auto", max_pixels: int | None = DEFAULT_MAX_PIXELS,
    person: str | None = None,
) -> CheckReport:
    """Decode every sample of every split and collect statistics and problems (never raises
    for a bad sample or listing: each missing file, malformed list line, name clash or unreadable
    sample becomes a problem line naming the file).

    Args:
        person: ``None``: labels are Helen class ids; ``"label"``: the label files are person
            masks (a person-mask source such as CCP: 0 background, 255 person, soft allowed);
            a template such as ``person/person_{num}.png``: Helen labels plus a person matte per
            image (see :mod:`portraitseg.data.mixed`).

    Raises:
        DatasetNotFoundError: no dataset of a known layout at ``root`` (nothing to check).
    """
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    report = CheckReport(root, layout, person=person)
    splits = discover(root, layout, problems=report.problems)
    if person is not None:
        return _check_person(report, splits, max_pixels)
    from portraitseg.data.dataset import load_sample  # imports PyTorch: only once there is data

    sizes: list[tuple[int, int]] = []
    for split, samples in splits.items():
        report.counts[split] = len(samples)
        if not samples:
            report.problems.append(f"split {split!r} is empty")
        for sample in samples:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", MultiFrameWarning)
                    image, label = load_sample(sample, max_pixels)
            except InputError as err:
                report.problems.append(str(err))
                continue
            report.problems += [str(w.message) for w in caught if issubclass(w.category, MultiFrameWarning)]
            sizes.append(image.shape[:2])
            report.class_pixels += np.bincount(label.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    _size_range(report, sizes)
    return report


def _size_range(report: CheckReport, sizes: list[tuple[int, int]]) -> None:
    """Store the smallest and largest image (by area) of ``sizes`` in ``report``."""
    if sizes:
        areas = [h * w for h, w in sizes]
        report.min_size = sizes[int(np.argmin(areas))]
        report.max_size = sizes[int(np.argmax(areas))]


def _check_person(report: CheckReport, splits: dict, max_pixels: int | None) -> CheckReport:
    from portraitseg.data.mixed import TargetSample, load_targets, person_path

    sizes: list[tuple[int, int]] = []
    for split, samples in splits.items():
        report.counts[split] = len(samples)
        for s in samples:
            matte = s.label if report.person == "label" else person_path(report.root, report.person, s.image)
            if not Path(matte).is_file():
                report.problems.append(f"{s.image}: person matte {matte} does not exist")
                continue
            parse = None if report.person == "label" else s.label
            try:
                sample = TargetSample(s.id, "", s.image, parse, Path(matte))
                image, labels, alpha = load_targets(sample, max_pixels)
            except InputError as err:
                report.problems.append(str(err))
                continue
            sizes.append(image.shape[:2])
            report.person_sum += float(alpha.sum()) / 255.0
            report.person_pixels += alpha.size
            if parse is not None:
                report.class_pixels += np.bincount(labels.ravel(), minlength=NUM_CLASSES)[:NUM_CLASSES]
    _size_range(report, sizes)
    return report


def print_report(report: CheckReport, console: Console | None = None) -> None:
    console = console or Console()
    console.print(f"[bold]{report.root}[/bold] (layout: {report.layout})")
    console.print("samples: " + ", ".join(f"{k} {v}" for k, v in report.counts.items()))
    if report.min_size:
        console.print(
            f"image size (HxW): smallest {report.min_size[0]}x{report.min_size[1]}, "
            f"largest {report.max_size[0]}x{report.max_size[1]}"
        )
    if report.person is not None:
        share = report.person_sum / max(report.person_pixels, 1)
        console.print(f"person mattes ({report.person}): person share of the pixels {100 * share:.1f}%")
    total = max(int(report.class_pixels.sum()), 1)
    if report.person != "label":
        table = Table("class", "pixels", "share")
        for name, count in zip(CLASS_NAMES, report.class_pixels, strict=True):
            table.add_row(name, f"{int(count):,}", f"{100 * count / total:.2f}%")
        console.print(table)
    if report.problems:
        console.print(f"[red]{len(report.problems)} problem(s):[/red]")
        for problem in report.problems:
            console.print(f"  - {problem}", markup=False, highlight=False)
    else:
        console.print("[green]no problems found[/green]")


def add_check_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "check", help="check a dataset: counts, class histogram, problems",
        description="Decode every sample and list every problem by file name. Exit status: 0 no "
                    "problems, 1 problems found (all listed), 2 no dataset at ROOT.")
    parser.add_argument("root", type=Path)
    parser.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS))
    parser.add_argument("--max-pixels", type=int_in(1), default=DEFAULT_MAX_PIXELS)
    parser.add_argument("--person", metavar="label|TEMPLATE", default=None,
                        help="check person mattes: `label` when the label files are person masks "
                             "(e.g. CCP: 0 background, 255 person), or a template of a matte per "
                             "image beside Helen labels, e.g. 'person/person_{num}.png' ({stem}: "
                             "image stem, {num}: its trailing digits)")
    parser.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        report = check_dataset(args.root, args.layout, args.max_pixels, args.person)
    except DatasetNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if report.ok else 1
