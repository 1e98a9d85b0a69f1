"""Start-up times of the command-line entry points: whole processes, median of N runs.

    python experiments/startup/bench.py [--runs 5] [--before /path/to/old/checkout]

Each case is started ``--runs`` times after one warm-up run (not counted) and timed from outside
(wall clock around ``subprocess.run``); the median, min and max are printed as a markdown table.
With ``--before`` every case also runs against that checkout's sources (``PYTHONPATH=<it>/src``,
its ``train.py``), e.g. one made with ``git archive b802009 | tar -x -C /tmp/before``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "src" / "portraitseg" / "weights" / "default.pt"


def cases(root: Path) -> dict[str, list[str]]:
    """``{name: argv}`` run from ``root`` (a checkout)."""
    py = sys.executable
    return {
        "portraitseg --help": [py, "-m", "portraitseg.cli.main", "--help"],
        "portraitseg render --help": [py, "-m", "portraitseg.cli.main", "render", "--help"],
        "render argument error (--strength inf)": [py, "-m", "portraitseg.cli.main", "render", "x.jpg",
                                                   "--strength", "inf"],
        "train.py --help": [py, str(root / "train.py"), "--help"],
        "sweep summarize (no runs: error)": [py, "-m", "portraitseg.sweep", "summarize",
                                             str(root / "nowhere")],
        "load the bundled weights (load_segmenter)": [
            py, "-c", f"from portraitseg.models import load_segmenter; load_segmenter({str(MODEL)!r})"],
        "floor: import torch": [py, "-c", "import torch"],
    }


def timed(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    out = []
    for i in range(runs + 1):
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if i:  # the first run warms the file cache
            out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", type=Path, help="an older checkout to compare against")
    args = parser.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", NO_ALBUMENTATIONS_UPDATE="1")
    env_before = dict(env, PYTHONPATH=str(args.before / "src")) if args.before else None
    head = "| command | median s | min-max s |" + (" before: median s | min-max s |" if args.before else "")
    print(head)
    print("|---|---|---|" + ("---|---|" if args.before else ""))
    before_cases = cases(args.before) if args.before else {}
    for name, argv in cases(REPO).items():
        t = timed(argv, env, args.runs)
        row = f"| {name} | {statistics.median(t):.2f} | {min(t):.2f}-{max(t):.2f} |"
        if args.before:
            b = timed(before_cases[name], env_before, args.runs)
            row += f" {statistics.median(b):.2f} | {min(b):.2f}-{max(b):.2f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
