"""The render path as a user runs it: whole ``portraitseg render`` processes against the naive
OpenCV script run the same way (start-up, imports, decode and encode included).

Rows (each the median of ``--runs`` pairs, the two commands alternating A B A B ..., the ratio
taken pair by pair; peak memory is each child's own ``ru_maxrss``):

* ``photo_1mp`` / ``photo_12mp``: ``portraitseg render PHOTO -o OUT`` (bundled model, default
  preset) vs ``bench.py --naive PHOTO MASK OUT``: ``cv2.imread``, float32, ``cv2.GaussianBlur``
  with the paper's sigma (0.012 x the short side), a blend with a mask PNG (the portrait's own
  ``--save-alpha`` matte, written once before timing), ``cv2.imwrite`` at JPEG quality 95.
* ``busy_1mp``: ``portraitseg render`` of the 1 MP photo with another process spinning on one
  core (started and stopped by this script) vs the same command on the quiet machine, and the
  same pair with ``OMP_WAIT_POLICY`` set to empty (OpenMP's default spinning, what the command
  did before it chose the passive policy) as the baseline.
* ``folder_12mp``: ``portraitseg render FOLDER`` of ``--folder-size`` 12 MP photos vs the naive
  script looping over the same folder in one process (``--naive-folder``): photos per second.
* ``imports``: ``python -X importtime`` of one render: the largest imports.

Each row records the machine's 1-minute load average before and after it (other work on the
machine shows there).
* ``before_1mp`` / ``before_12mp`` (with ``--before DIR``, a checkout of an earlier tree): the
  same ``portraitseg render`` from that tree (``PYTHONPATH=DIR/src``) vs this one.

The photos: scikit-image's ``astronaut`` cropped to 4:3, upscaled (bicubic) to 1152x864 and
4000x3000 with sensor-like noise, JPEG quality 92 (the folder: the same with other noise seeds),
written once under ``data/bench_render_path/``.

    python experiments/bench_render_path/bench.py --out experiments/bench_render_path/results.json
    python experiments/bench_render_path/bench.py --runs 1 --folder-size 2 --rows photo_1mp  # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "bench_render_path"
ROWS = ("photo_1mp", "photo_12mp", "busy_1mp", "folder_12mp", "imports")
#: rows run only with --before
BEFORE_ROWS = ("before_1mp", "before_12mp")
RENDER = [sys.executable, "-m", "portraitseg.cli.main", "render"]
SIZES = {"1mp": (1152, 864), "12mp": (4000, 3000)}


def naive(src: Path, mask: Path, out: Path) -> None:
    """The paper's portrait in OpenCV: blur the whole photo, blend with the mask, write."""
    import cv2
    import numpy as np

    image = cv2.imread(str(src)).astype(np.float32)
    alpha = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE).astype(np.float32)[..., None] / 255
    blurred = cv2.GaussianBlur(image, (0, 0), 0.012 * min(image.shape[:2]))
    cv2.imwrite(str(out), (alpha * image + (1 - alpha) * blurred).astype(np.uint8),
                [cv2.IMWRITE_JPEG_QUALITY, 95])


def make_photo(path: Path, size: tuple[int, int], seed: int) -> Path:
    """The astronaut, 4:3, upscaled to ``size`` (w, h) with noise, JPEG 92 (kept if present)."""
    if path.is_file():
        return path
    import cv2
    import numpy as np
    import skimage.data

    rgb = skimage.data.astronaut()[64:448]
    big = cv2.resize(rgb, size, interpolation=cv2.INTER_CUBIC).astype(np.float32)
    big += np.random.default_rng(seed).normal(0, 4, big.shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(big.clip(0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def mask_of(photo: Path) -> Path:
    """The portrait's matte of ``photo`` (``--save-alpha``), for the naive script's blend."""
    outdir = DATA / "masks"
    mask = outdir / f"{photo.stem}_alpha.png"
    if not mask.is_file():
        subprocess.run([*RENDER, str(photo), "-o", str(outdir), "--save-alpha", "-q"], check=True)
    return mask


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Run ``cmd`` to its end: ``(wall seconds, peak RSS in MB of that process)``."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def pairs(a: list[str], b: list[str], runs: int, env_a: dict | None = None,
          env_b: dict | None = None, warmup: bool = True) -> dict:
    """A and B alternating, one warm-up each: medians, ratios A/B pair by pair, peaks."""
    if warmup:
        timed(a, env_a), timed(b, env_b)
    ta, tb, ma, mb = [], [], [], []
    for _ in range(runs):
        wa, pa = timed(a, env_a)
        wb, pb = timed(b, env_b)
        ta.append(wa), tb.append(wb), ma.append(pa), mb.append(pb)
    return {"a_s": statistics.median(ta), "b_s": statistics.median(tb),
            "a_runs": [round(t, 3) for t in ta], "b_runs": [round(t, 3) for t in tb],
            "ratio": statistics.median(x / y for x, y in zip(ta, tb, strict=True)),
            "a_peak_mb": max(ma), "b_peak_mb": max(mb)}


def photo_row(size: str, runs: int) -> dict:
    photo = make_photo(DATA / f"astronaut_{size}.jpg", SIZES[size], 0)
    mask, out = mask_of(photo), DATA / "out"
    render = [*RENDER, str(photo), "-o", str(out), "--overwrite", "-q"]
    script = [sys.executable, __file__, "--naive", str(photo), str(mask), str(out / "naive.jpg")]
    return {"a": "portraitseg render", "b": "naive OpenCV script", **pairs(render, script, runs)}


def before_row(size: str, runs: int, before: Path) -> dict:
    photo = make_photo(DATA / f"astronaut_{size}.jpg", SIZES[size], 0)
    render = [*RENDER, str(photo), "-o", str(DATA / "out"), "--overwrite", "-q"]
    old = {**os.environ, "PYTHONPATH": str(before / "src")}
    return {"a": "portraitseg render (this tree)", "b": f"portraitseg render ({before})",
            **pairs(render, render, runs, env_b=old)}


def busy_row(runs: int) -> dict:
    photo = make_photo(DATA / "astronaut_1mp.jpg", SIZES["1mp"], 0)
    render = [*RENDER, str(photo), "-o", str(DATA / "out"), "--overwrite", "-q"]
    spinning = {**os.environ, "OMP_WAIT_POLICY": ""}  # OpenMP's default: idle threads spin a while
    timed(render)  # warm-up: the file cache
    rows = {}
    for name, env in (("passive", None), ("default_spin", spinning)):
        quiet = [timed(render, env)[0] for _ in range(runs)]
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(0.5)
            busy = [timed(render, env)[0] for _ in range(runs)]
        finally:
            spinner.kill()
            spinner.wait()
        rows[name] = {"quiet_s": statistics.median(quiet), "busy_s": statistics.median(busy),
                      "quiet_runs": [round(t, 3) for t in quiet],
                      "busy_runs": [round(t, 3) for t in busy],
                      "busy_over_quiet": statistics.median(busy) / statistics.median(quiet)}
    return rows


def folder_row(count: int, runs: int) -> dict:
    folder = DATA / f"folder_{count}"
    photos = [make_photo(folder / f"astronaut_{i:02d}.jpg", SIZES["12mp"], 100 + i) for i in range(count)]
    masks = DATA / f"folder_{count}_masks"
    if not all((masks / f"{p.stem}_alpha.png").is_file() for p in photos):
        subprocess.run([*RENDER, str(folder), "-o", str(masks), "--save-alpha", "--overwrite", "-q"],
                       check=True)
    out = DATA / "folder_out"
    render = [*RENDER, str(folder), "-o", str(out), "--overwrite", "-q"]
    script = [sys.executable, __file__, "--naive-folder", str(folder), str(masks), str(out)]
    row = pairs(render, script, runs, warmup=False)  # the photos were read to make their masks
    row.update({"a": "portraitseg render FOLDER", "b": "naive OpenCV loop (one process)",
                "photos": count,
                "a_photos_per_s": count / row["a_s"], "b_photos_per_s": count / row["b_s"],
                "speedup": row["b_s"] / row["a_s"]})
    return row


def imports_row() -> dict:
    photo = make_photo(DATA / "astronaut_1mp.jpg", SIZES["1mp"], 0)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "portraitseg.cli.main", "render",
                           str(photo), "-o", str(DATA / "out"), "--overwrite", "-q"],
                          capture_output=True, text=True, check=True)
    cumulative = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) <= 3:  # top-level imports and their direct children
            cumulative[m.group(4)] = int(m.group(2)) / 1e6
    top = dict(sorted(cumulative.items(), key=lambda kv: -kv[1])[:12])
    heavy = ["lightning", "hydra", "omegaconf", "wandb", "albumentations", "segmentation_models_pytorch",
             "timm", "torchvision"]
    loaded = [m for m in heavy if re.search(rf"\| +{m}(\.|$)", proc.stderr, re.M)]
    return {"largest_s": top, "not_imported": [m for m in heavy if m not in loaded], "imported": loaded}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--folder-size", type=int, default=20)
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated: {', '.join(ROWS)}")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    parser.add_argument("--before", type=Path, help="an earlier tree (git archive REV | tar -x -C DIR)")
    parser.add_argument("--naive", nargs=3, metavar=("SRC", "MASK", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--naive-folder", nargs=3, metavar=("DIR", "MASKS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive:
        naive(*map(Path, args.naive))
        return 0
    if args.naive_folder:
        folder, masks, out = map(Path, args.naive_folder)
        out.mkdir(parents=True, exist_ok=True)
        for src in sorted(folder.glob("*.jpg")):
            naive(src, masks / f"{src.stem}_alpha.png", out / f"{src.stem}_naive.jpg")
        return 0
    rows = args.rows.split(",")
    rows += [row for row in BEFORE_ROWS if args.before and row not in rows]
    results = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
               "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, "
                          f"Python {platform.python_version()}",
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "runs": args.runs}
    for row in rows:
        print(f"row {row} ...", file=sys.stderr, flush=True)
        load_before = os.getloadavg()[0]
        if row.startswith("photo_"):
            results[row] = photo_row(row.split("_")[1], args.runs)
        elif row == "busy_1mp":
            results[row] = busy_row(args.runs)
        elif row == "folder_12mp":
            results[row] = folder_row(args.folder_size, max(1, args.runs // 2))
        elif row == "imports":
            results[row] = imports_row()
        elif row in BEFORE_ROWS:
            results[row] = before_row(row.split("_")[1], args.runs, args.before)
        results[row]["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        print(json.dumps({row: results[row]}, indent=1), flush=True)
        if args.out:  # after every row: a run cut short keeps what it measured
            args.out.write_text(json.dumps(results, indent=1) + "\n")
    shutil.rmtree(DATA / "out", ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
