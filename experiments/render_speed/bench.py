"""Render speed on CPU: the paper's OpenCV path vs kornia's plain Gaussian vs portraitseg.render.

For each size (1024x1024, 4000x3000 = 12 MP) and sigma (8, 16, 32) the three renders of the same
portrait ``out = a * I + (1 - a) * blur(I)`` (naive mode, the paper's) are timed interleaved in
one process (run r of every method before run r + 1 of any), median of ``--runs``:

``cpu_ms`` is the process CPU time (all threads) of the same runs: on a machine shared with
other jobs it is the steadier figure, and with ``OMP_WAIT_POLICY=PASSIVE`` it is not inflated by
OpenMP threads spinning while their sibling waits for a core.

* ``opencv``: ``cv2.GaussianBlur`` (float32, reflect-101, OpenCV's kernel size) + numpy blend,
* ``kornia``: ``kornia.filters.gaussian_blur2d`` (separable, same kernel size, reflect) + torch blend,
* ``ours``: ``render_portrait(..., blur="gaussian", mode="naive", method="auto")`` (downsample path
  from sigma 8 on), and ``ours-exact`` (``method="exact"``: direct/FFT, OpenCV-exact).

Max abs error is measured against the exact Gaussian portrait in float64 (``cv2.GaussianBlur`` on
float64). Peak memory of one 12 MP render of each method runs in a fresh subprocess (peak RSS,
``VmHWM``, reset once the inputs are loaded, minus the RSS just before rendering). Also times the
presets (``conf/render/*.yaml``) at both sizes, from class probabilities at 384x512.

    .venv/bin/python experiments/render_speed/bench.py --threads 2 --runs 5 \
        --out experiments/render_speed/results.json
    .venv/bin/python experiments/render_speed/bench.py --sizes 256x192 --runs 1 --skip memory \
        --out /tmp/render_speed.json                                          # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

SIZES = {"1024x1024": (1024, 1024), "4000x3000": (3000, 4000)}  # name: (height, width)
SIGMAS = (8.0, 16.0, 32.0)
PLAIN = {"refine": 0.0, "feather": 0.0, "falloff": 0.0, "highlights": 0.0}
REPO = Path(__file__).resolve().parents[2]


def photo(h: int, w: int) -> np.ndarray:
    """A mosaic of the real photos bundled with scikit-image at their native resolution (no
    upscaling, so the fine texture that makes approximations err is kept), float32 HWC in [0, 1]."""
    import imageio.v3 as iio
    import skimage.data

    folder = Path(skimage.data.__file__).parent
    names = [
        "astronaut.png",
        "coffee.png",
        "chelsea.png",
        "rocket.jpg",
        "motorcycle_left.png",
        "retina.jpg",
        "hubble_deep_field.jpg",
    ]
    tiles = [iio.imread(folder / n)[..., :3] for n in names]
    out = np.zeros((h, w, 3), np.uint8)
    y, i = 0, 0
    while y < h:
        x, row = 0, 0
        while x < w:
            t = tiles[i % len(tiles)]
            i += 1
            th, tw = min(t.shape[0], h - y), min(t.shape[1], w - x)
            out[y : y + th, x : x + tw] = t[:th, :tw]
            x += tw
            row = max(row, th)
        y += row
    return out.astype(np.float32) / 255.0


def subject_alpha(h: int, w: int) -> np.ndarray:
    """A soft head-and-shoulders-like ellipse, float32 (H, W) in [0, 1]."""
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    d = np.sqrt(((xx - w / 2) / (0.22 * w)) ** 2 + ((yy - 0.55 * h) / (0.4 * h)) ** 2)
    return np.clip((1.0 - d) * min(h, w) / 8.0 + 0.5, 0.0, 1.0).astype(np.float32)


def methods(img: np.ndarray, alpha: np.ndarray, sigma: float):
    import kornia

    from portraitseg.render import render_portrait

    ksize = int(round(sigma * 8 + 1)) | 1
    x = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
    a_t = torch.from_numpy(alpha)[None, None]
    a_np = alpha[..., None]

    def opencv():
        blurred = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
        return a_np * img + (1 - a_np) * blurred

    def kornia_plain():
        blurred = kornia.filters.gaussian_blur2d(x, (ksize, ksize), (sigma, sigma), border_type="reflect")
        return a_t * x + (1 - a_t) * blurred

    def ours(method):
        def run():
            return render_portrait(
                x, alpha=a_t, blur="gaussian", mode="naive", sigma=sigma, method=method, **PLAIN
            )[0]

        return run

    return {"opencv": opencv, "kornia": kornia_plain, "ours": ours("auto"), "ours-exact": ours("exact")}


def as_hwc(out) -> np.ndarray:
    return out if isinstance(out, np.ndarray) else out[0].permute(1, 2, 0).numpy()


def reference(img: np.ndarray, alpha: np.ndarray, sigma: float) -> np.ndarray:
    img64 = img.astype(np.float64)
    blurred = cv2.GaussianBlur(img64, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    a = alpha[..., None].astype(np.float64)
    return a * img64 + (1 - a) * blurred


def time_grid(runs: int, only: list[str] | None, sizes: dict[str, tuple[int, int]]) -> list[dict]:
    rows = []
    for size_name, (h, w) in sizes.items():
        img, alpha = photo(h, w), subject_alpha(h, w)
        for sigma in SIGMAS:
            fns = methods(img, alpha, sigma)
            if only:
                fns = {k: v for k, v in fns.items() if k in only}
            ref = reference(img, alpha, sigma)
            errors = {}
            for name, fn in fns.items():  # warm-up run, also gives the error
                errors[name] = float(np.abs(as_hwc(fn()) - ref).max())
            times: dict[str, list[float]] = {name: [] for name in fns}
            cpu: dict[str, list[float]] = {name: [] for name in fns}
            for _ in range(runs):
                for name, fn in fns.items():
                    t0, c0 = time.perf_counter(), time.process_time()
                    fn()
                    times[name].append(time.perf_counter() - t0)
                    cpu[name].append(time.process_time() - c0)
            for name in fns:
                row = {
                    "size": size_name,
                    "sigma": sigma,
                    "method": name,
                    "median_ms": 1000 * statistics.median(times[name]),
                    "min_ms": 1000 * min(times[name]),
                    "cpu_ms": 1000 * statistics.median(cpu[name]),
                    "runs": runs,
                    "max_abs_error": errors[name],
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
            del ref
    return rows


def time_presets(runs: int, sizes: dict[str, tuple[int, int]]) -> list[dict]:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    rows = []
    presets = sorted(p.stem for p in (REPO / "conf" / "render").glob("*.yaml"))
    for size_name, (h, w) in sizes.items():
        x = torch.from_numpy(photo(h, w)).permute(2, 0, 1)[None].contiguous()
        # probabilities at a model's resolution (long side 512), as the CLI passes them
        small = torch.from_numpy(subject_alpha(384, 512) if w > h else subject_alpha(512, 512))[None, None]
        probs = torch.cat([1 - small, small], 1)
        renderers = {
            p: instantiate(OmegaConf.load(REPO / "conf" / "render" / f"{p}.yaml"), keep=[1]) for p in presets
        }
        times: dict[str, list[float]] = {p: [] for p in presets}
        for r in renderers.values():
            r(x, probs=probs)
        for _ in range(runs):
            for p, r in renderers.items():
                t0 = time.perf_counter()
                r(x, probs=probs)
                times[p].append(time.perf_counter() - t0)
        for p in presets:
            row = {
                "size": size_name,
                "preset": p,
                "median_ms": 1000 * statistics.median(times[p]),
                "runs": runs,
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    return rows


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key)) / 1024


def _reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def memory_child(method: str, threads: int) -> None:
    """Subprocess: one 12 MP render; prints its peak RSS (VmHWM, reset after the inputs are loaded,
    so building the test photo does not count) and the increase over the loaded inputs."""
    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    h, w = SIZES["4000x3000"]
    img, alpha = photo(h, w), subject_alpha(h, w)
    if method.startswith("preset:"):
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        renderer = instantiate(OmegaConf.load(REPO / "conf" / "render" / f"{method[7:]}.yaml"), keep=[1])
        x = torch.from_numpy(img).permute(2, 0, 1)[None].contiguous()
        small = torch.from_numpy(subject_alpha(384, 512))[None, None]
        probs = torch.cat([1 - small, small], 1)

        def fn():
            return renderer(x, probs=probs)
    else:
        fn = methods(img, alpha, 16.0)[method]
    fn()  # warm-up: lazy imports, allocator pools
    _reset_peak()
    base = _status_mb("VmRSS")
    fn()
    peak = _status_mb("VmHWM")
    print(
        json.dumps(
            {
                "method": method,
                "sigma": 16.0,
                "peak_rss_mb": peak,
                "increase_mb": peak - base,
                "before_mb": base,
            }
        )
    )


def memory(threads: int) -> list[dict]:
    rows = []
    for method in [
        "opencv",
        "kornia",
        "ours",
        "ours-exact",
        "preset:gaussian",
        "preset:halo_free",
        "preset:disc",
    ]:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", method, "--threads", str(threads)],
            capture_output=True,
            text=True,
            check=True,
        )
        row = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def machine() -> dict:
    model = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "load_avg_before": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="subset of methods (opencv kornia ours ours-exact)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["grid", "presets", "memory"])
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), metavar="WxH",
                        help="photo sizes of the grid and the presets (default: %(default)s)")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.threads)
        return
    sizes = {}
    for name in args.sizes:
        w, _, h = name.partition("x")
        if not (w.isdigit() and h.isdigit()):
            parser.error(f"--sizes {name}: expected WIDTHxHEIGHT, e.g. 1024x768")
        sizes[name] = (int(h), int(w))
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    info = {
        "machine": machine(),
        "threads": args.threads,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    print(json.dumps(info), flush=True)
    result = {"info": info}
    if "grid" not in args.skip:
        result["grid"] = time_grid(args.runs, args.only, sizes)
    if "presets" not in args.skip:
        result["presets"] = time_presets(args.runs, sizes)
    if "memory" not in args.skip:
        result["memory"] = memory(args.threads)
    result["info"]["load_avg_after"] = os.getloadavg()
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
