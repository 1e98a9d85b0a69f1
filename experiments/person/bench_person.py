"""Whole-person portraits: render quality face vs person, extension speed, HELEN* figure.

    OMP_NUM_THREADS=2 nice -n 10 python experiments/person/bench_person.py quality [--n 48] [--ckpt X]
    OMP_NUM_THREADS=2 nice -n 10 python experiments/person/bench_person.py ablation [--n 16]
    OMP_NUM_THREADS=2 nice -n 10 python experiments/person/bench_person.py timing [--runs 7]
    OMP_NUM_THREADS=2 nice -n 10 python experiments/person/bench_person.py figure
    python experiments/person/bench_person.py quality --n 2 --size 128 --out-dir /tmp/person   # smoke test

quality: synthetic portraits (seed 1, not the training seed 0). Ground truth = the clean
background blurred by the renderer (alpha 0, same preset, no falloff) with the whole-person
foreground layer composited over it by its true alpha. Renders of the composite image with
subject=face (the parse's kept classes), subject=person (person_alpha) and the true person alpha
(oracle, the upper bound), from the true labels (one-hot) and, with --ckpt, from a face-parsing
model's prediction. PSNR over the whole image and in the 8 px band around the true person outline.

timing: person_alpha on a 1 MP (1152x864) and a 12 MP (4000x3000) photo with a face parse at
model resolution (512 px long side); wall and CPU (process) time, median of --runs after a warm-up.

figure: the first six pairs of HELEN* sample40.txt with their real labels as the face parse
(one-hot probabilities), rendered with the default preset both ways.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from portraitseg.classes import NUM_CLASSES
from portraitseg.data.synthetic import make_sample
from portraitseg.io import read_image, read_label
from portraitseg.render import render_portrait
from portraitseg.render.options import PERSON_DEFAULTS
from portraitseg.sizing import long_side
from portraitseg.subject.grabcut import person_alpha

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HELENSTAR = Path(os.environ.get("PORTRAITSEG_HELENSTAR", REPO.parent / "shared" / "data" / "helenstar"))
BAND = 8
#: render presets compared (conf/render/*.yaml values; falloff 0 so the ground truth is defined)
PRESETS = {
    "halo_free": {"blur": "gaussian", "mode": "halo_free", "strength": 0.012, "falloff": 0.0, "refine": 0.01,
                  "highlights": 0.0},
    "disc": {"blur": "disc", "mode": "halo_free", "strength": 0.012, "falloff": 0.0, "refine": 0.01,
             "highlights": 0.0},
}


def to_tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float() / 255


def one_hot(label: np.ndarray) -> torch.Tensor:
    return F.one_hot(torch.from_numpy(label).long(), NUM_CLASSES).permute(2, 0, 1)[None].float()


def psnr(a: torch.Tensor, b: torch.Tensor, mask: np.ndarray | None = None) -> float:
    err = ((a - b) ** 2).mean(1)[0]
    mse = float(err[torch.from_numpy(mask)].mean()) if mask is not None else float(err.mean())
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def band(alpha: np.ndarray, width: int = BAND) -> np.ndarray:
    mask = (alpha > 0.5).astype(np.uint8)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * width + 1, 2 * width + 1))
    return (cv2.dilate(mask, kernel) > 0) & ~(cv2.erode(mask, kernel) > 0)


def face_probs(model, info, x: torch.Tensor) -> torch.Tensor:
    size = long_side(x.shape[-2], x.shape[-1], int(info.get("image_size") or 256), upscale=False)
    with torch.no_grad():
        small = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return model(small).float().softmax(1)


def quality(args: argparse.Namespace) -> dict:
    model = info = None
    if args.ckpt:
        from portraitseg.models.checkpoint import load_segmenter

        model, info = load_segmenter(args.ckpt)
    sources = ["true"] + (["pred"] if model is not None else [])
    rows: dict[str, list[float]] = {}
    warnings = 0
    for i in range(args.n):
        s = make_sample(i, seed=args.seed, size=args.size)
        x, bg, fg = to_tensor(s.image), to_tensor(s.background), to_tensor(s.foreground[..., :3])
        alpha_t = torch.from_numpy(s.alpha)[None, None]
        ring = band(s.alpha)
        parses = {"true": one_hot(s.label)}
        if model is not None:
            parses["pred"] = face_probs(model, info, x)
        for preset, opts in PRESETS.items():
            blurred, _ = render_portrait(bg, alpha=torch.zeros_like(alpha_t), **opts)
            truth = alpha_t * fg + (1 - alpha_t) * blurred
            alphas = {"oracle": alpha_t}
            for src in sources:
                pa, notes = person_alpha(x, parses[src], work_size=args.work_size)
                warnings += len(notes)
                alphas[f"face/{src}"] = None
                alphas[f"person/{src}"] = pa
            for name, a in alphas.items():
                if a is None:
                    out, _ = render_portrait(x, probs=parses[name.split("/")[1]], **opts)
                else:
                    out, _ = render_portrait(x, alpha=a, **opts)
                rows.setdefault(f"{preset}|{name}|image", []).append(psnr(out, truth))
                rows.setdefault(f"{preset}|{name}|band", []).append(psnr(out, truth, ring))
    summary = {k: float(np.mean(v)) for k, v in rows.items()}
    return {"n": args.n, "size": args.size, "seed": args.seed, "work_size": args.work_size,
            "ckpt": str(args.ckpt) if args.ckpt else None, "warnings": warnings, "psnr": summary}


def ablation(args: argparse.Namespace) -> dict:
    """Quality (true parse, halo_free) and 12 MP time per working size and GrabCut iterations."""
    samples = [make_sample(i, seed=args.seed, size=args.size) for i in range(args.n)]
    prepared = []
    for s in samples:
        x, bg, fg = to_tensor(s.image), to_tensor(s.background), to_tensor(s.foreground[..., :3])
        alpha_t = torch.from_numpy(s.alpha)[None, None]
        blurred, _ = render_portrait(bg, alpha=torch.zeros_like(alpha_t), **PRESETS["halo_free"])
        prepared.append((x, one_hot(s.label), alpha_t * fg + (1 - alpha_t) * blurred, band(s.alpha)))
    big, big_probs = timing_inputs((3000, 4000))
    out = {}
    for work in args.work_sizes:
        for iters in args.iterations_list:
            image_psnr, band_psnr = [], []
            for x, probs, truth, ring in prepared:
                a, _ = person_alpha(x, probs, work_size=work, iterations=iters)
                r, _ = render_portrait(x, alpha=a, **PRESETS["halo_free"])
                image_psnr.append(psnr(r, truth))
                band_psnr.append(psnr(r, truth, ring))
            wall, cpu = measure(partial(person_alpha, big, big_probs, work_size=work, iterations=iters),
                                args.runs)
            out[f"{work}x{iters}"] = {"work_size": work, "iterations": iters,
                                      "psnr_image": float(np.mean(image_psnr)),
                                      "psnr_band": float(np.mean(band_psnr)), "ms_12mp_wall": wall,
                                      "ms_12mp_cpu": cpu}
            print(json.dumps(out[f"{work}x{iters}"]), flush=True)
    return out


def timing_inputs(hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A synthetic portrait upscaled to ``hw`` and its true face parse at 512 px (model resolution)."""
    s = make_sample(0, seed=1, size=(768, 1024))
    rgb = cv2.resize(s.image, (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR)
    model_hw = long_side(hw[0], hw[1], 512, upscale=False)
    label = cv2.resize(s.label, (model_hw[1], model_hw[0]), interpolation=cv2.INTER_NEAREST)
    return to_tensor(rgb), one_hot(label)


def measure(fn, runs: int) -> tuple[float, float]:
    fn()  # warm-up
    walls, cpus = [], []
    for _ in range(runs):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(1000 * (time.perf_counter() - w0))
        cpus.append(1000 * (time.process_time() - c0))
    return statistics.median(walls), statistics.median(cpus)


def timing(args: argparse.Namespace) -> dict:
    out = {}
    for name, hw in (("1MP", (864, 1152)), ("12MP", (3000, 4000))):
        image, probs = timing_inputs(hw)
        wall, cpu = measure(partial(person_alpha, image, probs, work_size=args.work_size), args.runs)
        alpha, notes = person_alpha(image, probs, work_size=args.work_size)
        out[name] = {"hw": list(hw), "work": list(alpha.shape[-2:]), "ms_wall": wall, "ms_cpu": cpu,
                     "warnings": notes}
        print(name, json.dumps(out[name]), flush=True)
    return out


def figure(args: argparse.Namespace) -> dict:
    pairs = (HELENSTAR / "sample40.txt").read_text().split("\n")[: args.photos]
    tile = args.tile
    top, bottom, notes = [], [], {}
    for line in pairs:
        image_rel, label_rel = line.split()
        x = to_tensor(read_image(HELENSTAR / image_rel))
        probs = one_hot(read_label(HELENSTAR / label_rel))
        face, _ = render_portrait(x, probs=probs)
        alpha, warn = person_alpha(x, probs, work_size=args.work_size)
        person, _ = render_portrait(x, alpha=alpha)
        notes[image_rel] = warn
        for row, out, name in ((top, face, "subject=face"), (bottom, person, "subject=person")):
            rgb = (out[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)
            rgb = cv2.resize(rgb, (tile, tile), interpolation=cv2.INTER_AREA)
            if not row:
                for colour, width in (((0, 0, 0), 3), ((255, 255, 255), 1)):
                    cv2.putText(rgb, name, (4, tile - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.42, colour, width,
                                cv2.LINE_AA)
            row.append(rgb)
    gap = np.full((tile, 4, 3), 255, np.uint8)
    rows = [np.concatenate([t for img in row for t in (img, gap)][:-1], 1) for row in (top, bottom)]
    grid = np.concatenate([rows[0], np.full((4, rows[0].shape[1], 3), 255, np.uint8), rows[1]], 0)
    path = args.out_dir / "person_vs_face.png"
    cv2.imwrite(str(path), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"wrote {path} ({path.stat().st_size / 1e3:.0f} kB)")
    return {"photos": [p.split()[0] for p in pairs], "warnings": notes, "bytes": path.stat().st_size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("quality", "ablation", "timing", "figure"))
    parser.add_argument("--n", type=int, default=48)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--ckpt", type=Path, help="face-parsing checkpoint for predicted-mask rows")
    parser.add_argument("--work-size", type=int, default=PERSON_DEFAULTS["work_size"])
    parser.add_argument("--work-sizes", type=int, nargs="+", default=[128, 192, 256, 384])
    parser.add_argument("--iterations-list", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--photos", type=int, default=6)
    parser.add_argument("--tile", type=int, default=176)
    parser.add_argument("--out-dir", type=Path, default=HERE,
                        help="folder of results_<what>.json and the figure (default: next to this script)")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
               f"{torch.__version__.split('+')[0]}, opencv {cv2.__version__}, "
               f"{torch.get_num_threads()} torch threads")
    result = {"what": args.what, "argv": sys.argv[1:], "machine": machine}
    task = {"quality": quality, "ablation": ablation, "timing": timing, "figure": figure}[args.what]
    result.update(task(args))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out = args.out_dir / f"results_{args.what}{'_pred' if getattr(args, 'ckpt', None) else ''}.json"
    out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
