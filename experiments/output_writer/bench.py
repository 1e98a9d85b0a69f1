"""What the verified, atomic output writer (portraitseg.io) costs against a bare write.

    python experiments/output_writer/bench.py [--runs 7] [--files 200] [--dir DIR]

Portraits: a 12 MP photo-like image (smooth gradients + noise) as JPEG q95 and PNG, three ways:
encoding only (Pillow into memory), Pillow's own ``save`` to the file (what the render CLI did
before: no fsync, no check), and ``io.write_image`` (encode, write to a temporary file, fsync,
size and decode check, rename, folder fsync). Small files: 30 kB written 200 times, as a
synthetic dataset does, with ``atomic_write`` durable (fsync each file) and not (``durable=False``,
the synthetic generator's setting: one os.sync at the end). The ways take turns within each run;
medians of ``--runs`` runs, ratios against the bare write measured in the same process. Prints
markdown tables.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from portraitseg.io import atomic_write, encode_image, write_image


def photo_like(h: int, w: int) -> np.ndarray:
    """Smooth gradients plus mild noise: compresses like a photo (not like pure noise)."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    base = np.stack([xx / w, yy / h, (xx + yy) / (w + h)], -1) * 200 + 30
    noise = np.random.default_rng(0).normal(0, 6, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def median_times(fns: list[Callable[[], object]], runs: int) -> list[float]:
    """Median seconds of each function; the functions take turns within each run, so a change
    of the machine's load hits them alike."""
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(runs):
        for fn, spent in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            spent.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(dir=args.dir))
    rgb = photo_like(3000, 4000)
    rows = []
    for suffix, fmt in ((".jpg", "JPEG"), (".png", "PNG")):
        kwargs = {"quality": 95} if fmt == "JPEG" else {}
        out = folder / f"portrait{suffix}"
        encode, bare, ours = median_times([
            lambda out=out: encode_image(out, rgb),
            lambda out=out, fmt=fmt, kwargs=kwargs: Image.fromarray(rgb).save(out, format=fmt, **kwargs),
            lambda out=out: write_image(out, rgb),
        ], args.runs)
        size = out.stat().st_size / 1e6
        rows.append((f"12 MP {fmt} ({size:.1f} MB)", encode, bare, ours))
    data = os.urandom(30_000)
    small = folder / "small"
    small.mkdir()

    def many(write: Callable[[Path], object]) -> Callable[[], None]:
        return lambda: [write(small / f"f{i}.png") for i in range(args.files)]

    bare, quick, durable = (t / args.files for t in median_times([
        many(lambda p: p.write_bytes(data)),
        many(lambda p: atomic_write(p, data, durable=False)),
        many(lambda p: atomic_write(p, data)),
    ], args.runs))
    shutil.rmtree(folder)
    print(f"median of {args.runs} runs, written to {folder.parent}\n")
    print("| output | encode only (s) | Pillow save, bare (s) | io.write_image (s) | ratio to bare |")
    print("|---|---|---|---|---|")
    for name, encode, bare_s, ours in rows:
        print(f"| {name} | {encode:.3f} | {bare_s:.3f} | {ours:.3f} | {ours / bare_s:.2f} |")
    print("\n| 30 kB file | bare write_bytes (ms) | atomic_write durable=False (ms) | atomic_write (ms) |")
    print("|---|---|---|---|")
    print(f"| per file, {args.files} files | {bare * 1e3:.2f} | {quick * 1e3:.2f} ({quick / bare:.1f}x) | "
          f"{durable * 1e3:.2f} ({durable / bare:.1f}x) |")


if __name__ == "__main__":
    main()
