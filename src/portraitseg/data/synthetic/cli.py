"""``python -m portraitseg.data synth``: generate the synthetic dataset from the command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from portraitseg.data.synthetic.draw import parse_size
from portraitseg.data.synthetic.files import DEFAULT_ROOT, generate, read_manifest


def _size_arg(text: str) -> tuple[int, int]:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def add_synth_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Register the ``synth`` subcommand on an argparse ``subparsers`` object."""
    p = subparsers.add_parser(
        "synth", help="generate the synthetic portrait dataset (HELEN* layout + layers)",
        description="Generate deterministic synthetic portraits with Helen labels and their "
                    "ground-truth layers (clean background, RGBA person). An intact dataset "
                    "with the same parameters is reused.")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="output folder (%(default)s)")
    p.add_argument("--n", type=int, default=64, help="number of portraits (%(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed (%(default)s)")
    p.add_argument("--size", type=_size_arg, default=(128, 128),
                   help="S or HxW in pixels (default 128, as conf/data/synthetic.yaml)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="share of portraits in test.txt (%(default)s)")
    p.add_argument("--force", action="store_true",
                   help="regenerate, replacing a dataset made with other parameters")
    p.set_defaults(func=run_synth)
    return p


def run_synth(args: argparse.Namespace) -> int:
    """Run ``synth`` from parsed arguments; returns the process exit code."""
    t0 = time.perf_counter()
    try:
        root = generate(args.root, n=args.n, seed=args.seed, size=args.size, force=args.force,
                        test_fraction=args.test_fraction, progress=True)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # ours name the root; the system's (read-only, not a folder) get it here
        text = f"--root {args.root}: cannot be written ({err.strerror})" if err.strerror else str(err)
        print(f"error: {text}", file=sys.stderr)
        return 2
    manifest = read_manifest(root) or {}
    splits = manifest.get("splits", {})
    h, w = manifest.get("params", {}).get("size", args.size)
    print(f"{root}: {len(splits.get('train', []))} train + {len(splits.get('test', []))} test "
          f"portraits, {h}x{w} px, seed {args.seed} ({time.perf_counter() - t0:.1f} s)")
    return 0
