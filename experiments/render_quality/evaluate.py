"""Render quality against ground truth from the synthetic data's layers: naive (paper) vs halo-free.

Every synthetic portrait (``portraitseg.data.synthetic``) is an exact composite of a clean
background and an RGBA person layer, so the portrait a real lens would have taken is known::

    truth = A * F + (1 - A) * blur(background)        A, F: the person layer's alpha and colour

(the *whole* person, neck and clothes included, is the subject). Each render gets the photo and
an alpha and is scored against ``truth`` by PSNR and SSIM over the whole image and over an 8-px
band around the subject boundary (pixels within 8 px of the ``A > 0.5`` outline, both sides),
where halos live. Renders: ``naive`` (the paper: ``A * I + (1 - A) * blur(I)``), ``halo_free``
and, as an ablation, ``halo_free_no_fg`` (normalised convolution without the foreground-colour
estimate), each with the Gaussian and the disc kernel, all with ``method="exact"``, no falloff,
no highlights and no refinement (the truth has none of them).

Alphas: ``true`` (the layer's alpha). ``predicted`` needs a trained model: pass ``--ckpt`` (a
``train.py`` checkpoint or an exported model); the renders then get the model's class
probabilities at its input resolution and refine them against the photo as the ``halo_free``
preset does (``refine: 0.01``; the naive renders stay unrefined as in the paper). A face-parsing
model labels neck and body as background, so its subject is the head only and the truth (whole
person) penalises that; ``subject=person`` is measured separately (``experiments/person``).

    .venv/bin/python experiments/render_quality/evaluate.py --n 24 --size 512 --strength 0.012 0.03 \
        --out experiments/render_quality/results.json --figure experiments/render_quality/crops.png
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from skimage.metrics import structural_similarity

from portraitseg.classes import SUBJECT_CLASSES
from portraitseg.render import composite_halo_free, composite_naive, lens_blur, render_portrait

BAND = 8
KERNELS = ("gaussian", "disc")
MODES = ("naive", "halo_free")


def load_samples(args: argparse.Namespace):
    """Yield ``(id, image, foreground_rgb, alpha)`` float32 arrays, from disk or generated in memory."""
    if args.root:
        from portraitseg.data.synthetic import read_layers

        lines = (args.root / "test.txt").read_text().split("\n")
        ids = [Path(line.split()[0]).stem for line in lines if line.strip()][: args.n]
        for sample_id in ids:
            background, foreground = read_layers(args.root, sample_id)
            image = cv2.cvtColor(
                cv2.imread(str(args.root / "test" / "images" / f"{sample_id}.png")), cv2.COLOR_BGR2RGB
            )
            yield sample_id, image, background, foreground
    else:
        from portraitseg.data.synthetic import make_sample

        for i in range(args.n):
            s = make_sample(i, args.seed, args.size)
            yield f"synth_{i:04d}", s.image, s.background, s.foreground


def band_mask(alpha: np.ndarray, width: int = BAND) -> np.ndarray:
    """Pixels within ``width`` px of the outline of ``alpha > 0.5`` (inside or outside)."""
    inside = (alpha > 0.5).astype(np.uint8)
    d_out = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 5)
    d_in = cv2.distanceTransform(inside, cv2.DIST_L2, 5)
    return np.where(inside > 0, d_in, d_out) <= width


def scores(render: np.ndarray, truth: np.ndarray, band: np.ndarray) -> dict[str, float]:
    err = (render - truth) ** 2
    _, ssim_map = structural_similarity(truth, render, channel_axis=2, data_range=1.0, full=True)
    ssim_map = ssim_map.mean(-1)
    return {
        "psnr": float(10 * np.log10(1.0 / max(err.mean(), 1e-12))),
        "psnr_band": float(10 * np.log10(1.0 / max(err[band].mean(), 1e-12))),
        "ssim": float(ssim_map.mean()),
        "ssim_band": float(ssim_map[band].mean()),
    }


def to_tensor(a: np.ndarray) -> torch.Tensor:
    a = a.astype(np.float32) / 255.0 if a.dtype == np.uint8 else a
    return (
        torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]
        if a.ndim == 3
        else torch.from_numpy(a)[None, None]
    )


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t[0].permute(1, 2, 0).clamp(0, 1).numpy()


class Predictor:
    """Class probabilities of a trained segmenter for a photo (the ``--ckpt`` hook)."""

    def __init__(self, ckpt: Path) -> None:
        from portraitseg.models.checkpoint import load_segmenter

        self.net, info = load_segmenter(ckpt)
        size = info.get("image_size") or 256
        self.size = int(max(size)) if isinstance(size, (list, tuple)) else int(size)

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2:]
        scale = self.size / max(h, w)
        small = torch.nn.functional.interpolate(
            image,
            size=(max(1, round(h * scale)), max(1, round(w * scale))),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return self.net(small.clamp(0, 1)).float().softmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=24, help="number of synthetic portraits")
    parser.add_argument("--size", type=int, default=512, help="side of the generated portraits (no --root)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--root", type=Path, help="read the layers of a generated dataset's test split instead"
    )
    parser.add_argument(
        "--strength",
        type=float,
        nargs="+",
        default=[0.012, 0.03],
        help="blur sigma as a fraction of the short side (0.012 = the presets')",
    )
    parser.add_argument(
        "--ckpt", type=Path, help="trained model for the 'predicted alpha' rows"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--figure", type=Path, help="PNG of boundary crops: truth | naive | halo-free")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor(args.ckpt) if args.ckpt else None

    per_image: list[dict] = []
    crops = []
    t0 = time.perf_counter()
    for k, (sample_id, image8, background8, foreground8) in enumerate(load_samples(args)):
        image = to_tensor(image8)
        background = to_tensor(background8)
        fg = to_tensor(foreground8[..., :3])
        alpha = to_tensor(foreground8[..., 3])
        band = band_mask(alpha[0, 0].numpy())
        short = min(image.shape[-2:])
        probs = predictor(image) if predictor else None
        for strength in args.strength:
            sigma = strength * short
            for kernel in KERNELS:
                truth = to_numpy(torch.lerp(lens_blur(background, sigma, kernel, "exact"), fg, alpha))
                renders = {
                    ("true", "naive"): composite_naive(image, alpha, sigma, kernel=kernel, method="exact"),
                    ("true", "halo_free"): composite_halo_free(
                        image, alpha, sigma, kernel=kernel, method="exact"
                    ),
                    # ablation: normalised convolution alone, the photo as the subject's colour
                    ("true", "halo_free_no_fg"): composite_halo_free(
                        image, alpha, sigma, kernel=kernel, method="exact", estimate=False
                    ),
                }
                if probs is not None:
                    for mode in MODES:
                        renders[("predicted", mode)] = render_portrait(
                            image,
                            probs=probs,
                            keep=SUBJECT_CLASSES,
                            blur=kernel,
                            mode=mode,
                            sigma=sigma,
                            method="exact",
                            falloff=0.0,
                            highlights=0.0,
                            feather=0.0,
                            refine=0.01 if mode == "halo_free" else 0.0,
                        )[0]
                for (source, mode), render in renders.items():
                    row = {
                        "id": sample_id,
                        "strength": strength,
                        "sigma": sigma,
                        "kernel": kernel,
                        "alpha": source,
                        "mode": mode,
                        **scores(to_numpy(render), truth, band),
                    }
                    per_image.append(row)
                if k < 3 and kernel == "gaussian" and strength == max(args.strength):
                    crops.append(
                        (
                            truth,
                            to_numpy(renders[("true", "naive")]),
                            to_numpy(renders[("true", "halo_free")]),
                            alpha[0, 0].numpy(),
                        )
                    )
        print(f"{sample_id} done ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

    summary = summarise(per_image)
    for row in summary:
        print(json.dumps(row))
    if args.out:
        args.out.write_text(
            json.dumps(
                {
                    "command": " ".join(["python", *sys.argv]),
                    "args": vars(args)
                    | {
                        "root": str(args.root) if args.root else None,
                        "ckpt": str(args.ckpt) if args.ckpt else None,
                        "out": str(args.out),
                        "figure": str(args.figure) if args.figure else None,
                    },
                    "summary": summary,
                    "per_image": per_image,
                },
                indent=1,
            )
        )
    if args.figure and crops:
        figure(crops, args.figure)


def summarise(rows: list[dict]) -> list[dict]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["strength"], r["kernel"], r["alpha"], r["mode"]), []).append(r)
    out = []
    for (strength, kernel, source, mode), rs in groups.items():
        out.append(
            {
                "strength": strength,
                "kernel": kernel,
                "alpha": source,
                "mode": mode,
                "n": len(rs),
                **{m: statistics.mean(r[m] for r in rs) for m in ("psnr", "psnr_band", "ssim", "ssim_band")},
            }
        )
    return out


def figure(crops: list[tuple], path: Path, size: int = 160) -> None:
    """One row per portrait: a boundary crop of truth | naive (paper) | halo-free, 2x nearest zoom."""
    from PIL import Image, ImageDraw

    rows = []
    for truth, naive, halo_free, alpha in crops:
        # centre the crop on the outline point with the largest naive-render error
        band = band_mask(alpha)
        err = np.where(band, np.abs(naive - truth).sum(-1), 0)
        y, x = np.unravel_index(np.argmax(err), err.shape)
        half = size // 4
        y0 = int(np.clip(y - half, 0, truth.shape[0] - 2 * half))
        x0 = int(np.clip(x - half, 0, truth.shape[1] - 2 * half))
        tiles = [
            (np.clip(t[y0 : y0 + 2 * half, x0 : x0 + 2 * half], 0, 1) * 255).round().astype(np.uint8)
            for t in (truth, naive, halo_free)
        ]
        tiles = [np.asarray(Image.fromarray(t).resize((size, size), Image.NEAREST)) for t in tiles]
        sep = np.full((size, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([tiles[0], sep, tiles[1], sep, tiles[2]], 1))
    grid = np.concatenate(
        [np.concatenate([r, np.full((4, r.shape[1], 3), 255, np.uint8)], 0) for r in rows], 0
    )
    header = np.full((22, grid.shape[1], 3), 255, np.uint8)
    img = Image.fromarray(np.concatenate([header, grid], 0))
    draw = ImageDraw.Draw(img)
    for i, label in enumerate(["truth (layers)", "naive (paper)", "halo-free"]):
        draw.text((i * (size + 4) + 6, 5), label, fill=(0, 0, 0))
    img.save(path)


if __name__ == "__main__":
    main()
