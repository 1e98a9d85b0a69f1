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

from portraitseg.classes import CLASS_NAMES, NUM_CLASSES
from portraitseg.cli.args import int_in
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

    @property
    def ok(self) -> bool:
        return not self.problems


def check_dataset(
    root: str | os.PathLike, layout: str = "auto", max_pixels: int | None = DEFAULT_MAX_PIXELS
) -> CheckReport:
    """Decode every sample of every split and collect statistics and problems (never raises
    for a bad sample or listing: each missing file, malformed list line, name clash or unreadable
    sample becomes a problem line naming the file).

    Raises:
        DatasetNotFoundError: no dataset of a known layout at ``root`` (nothing to check).
    """
    root = Path(root)
    layout = detect_layout(root) if layout == "auto" else layout
    report = CheckReport(root, layout)
    splits = discover(root, layout, problems=report.problems)
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
    if sizes:
        areas = [h * w for h, w in sizes]
        report.min_size = sizes[int(np.argmin(areas))]
        report.max_size = sizes[int(np.argmax(areas))]
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
    table = Table("class", "pixels", "share")
    total = max(int(report.class_pixels.sum()), 1)
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
    parser.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    try:
        report = check_dataset(args.root, args.layout, args.max_pixels)
    except DatasetNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print_report(report)
    return 0 if report.ok else 1
