"""Pass-2 ablation: the face-crop pass on/off, on HELEN* val and on the same photos shrunk
into larger canvases (small faces).

HELEN* val is the deterministic 10 % carve of ``train.txt``
(:func:`portraitseg.data.datamodule.carve_split` ``(samples, 0.1, 0)``, as ``data=helenstar`` /
``data=mixed`` use it). Each photo is scored as it is (``scale 1``) and shrunk by ``scale``
(``2, 4``: area interpolation) into a canvas of its own size (the face then covers 1/4, 1/16 of
the frame with 1/4, 1/16 of its pixels, as a small face in a real photo; the canvas is another
val photo turned upside down and blurred, so it holds no upright face); the pipeline parses the
whole canvas, and the parse of the photo's region is scored against the full-resolution label.
Scores: the Helen F1s of :func:`portraitseg.lit.metrics.scores_from_confusion` (overall = brows +
eyes + nose + mouth) and the share of photos where pass 2 parsed at least one crop.

    python experiments/bench_pipeline/ablation_pass2.py --ckpt default        # the recorded run
    python experiments/bench_pipeline/ablation_pass2.py --limit 8 --scales 1 4  # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
HELENSTAR = REPO.parent / "shared" / "data" / "helenstar"
GROUPS = ("f1_overall", "f1_brows", "f1_eyes", "f1_nose", "f1_mouth", "f1/skin", "f1/hair")


def canvas_of(rgb, other, scale: int, index: int):
    """``rgb`` shrunk by ``scale`` into a canvas of its size filled with ``other`` (upside down,
    blurred); returns the canvas and the shrunk photo's ``(top, left, height, width)``."""
    import cv2

    h, w = rgb.shape[:2]
    if scale == 1:
        return rgb, (0, 0, h, w)
    fill = cv2.resize(cv2.GaussianBlur(np.ascontiguousarray(other[::-1]), (0, 0), 6), (w, h),
                      interpolation=cv2.INTER_AREA)
    sh, sw = max(1, round(h / scale)), max(1, round(w / scale))
    small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA)
    top, left = (index * 7919) % (h - sh + 1), (index * 104729) % (w - sw + 1)  # deterministic spots
    fill[top : top + sh, left : left + sw] = small
    return fill, (top, left, sh, sw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", default="default")
    parser.add_argument("--root", default=str(HELENSTAR))
    parser.add_argument("--scales", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--limit", type=int, default=None, help="first N val photos only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=str(HERE / "ablation_pass2.json"))
    args = parser.parse_args()

    import cv2
    import torch
    import torch.nn.functional as F

    from portraitseg.classes import NUM_CLASSES
    from portraitseg.data.datamodule import carve_split
    from portraitseg.data.layouts import discover
    from portraitseg.io import read_image, read_label
    from portraitseg.lit.metrics import scores_from_confusion
    from portraitseg.pipeline import PortraitPipeline

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    samples = discover(args.root, "helenstar")["train"]
    _, val = carve_split(samples, 0.1, 0)
    val = val[: args.limit] if args.limit else val
    pipe = PortraitPipeline.from_pretrained(args.ckpt, device="cpu")
    results: dict = {"ckpt": args.ckpt, "model_size": pipe.model_size, "person_head": pipe.person_head,
                     "photos": len(val), "scales": {}}
    confusion = {(s, on): torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
                 for s in args.scales for on in (False, True)}
    used = {key: 0 for key in confusion}
    seconds = {key: 0.0 for key in confusion}
    with torch.inference_mode():
        for i, sample in enumerate(val):
            rgb, label = read_image(sample.image), torch.from_numpy(read_label(sample.label)).long()
            other = read_image(val[(i + 1) % len(val)].image)
            for scale in args.scales:
                canvas, (top, left, h, w) = canvas_of(rgb, other, scale, i)
                image = torch.from_numpy(canvas).permute(2, 0, 1)[None].float().div_(255)
                for on in (False, True):
                    pipe.face_pass = on
                    t0 = time.perf_counter()
                    parse, _, _, face_used = pipe.parse(image)
                    seconds[(scale, on)] += time.perf_counter() - t0
                    used[(scale, on)] += int(face_used.any())
                    ch, cw = canvas.shape[:2]
                    gh, gw = parse.shape[-2:]
                    y0, y1 = top * gh / ch, (top + h) * gh / ch
                    x0, x1 = left * gw / cw, (left + w) * gw / cw
                    # the photo's region of the parse grid, resampled to the label (bilinear on probs)
                    theta = torch.tensor([[[(x1 - x0) / gw, 0, (x0 + x1) / gw - 1],
                                           [0, (y1 - y0) / gh, (y0 + y1) / gh - 1]]])
                    grid = F.affine_grid(theta, [1, NUM_CLASSES, *label.shape], align_corners=False)
                    pred = F.grid_sample(parse, grid, mode="bilinear", align_corners=False)[0].argmax(0)
                    known = label != 255
                    confusion[(scale, on)] += torch.bincount(
                        label[known] * NUM_CLASSES + pred[known], minlength=NUM_CLASSES**2
                    ).view(NUM_CLASSES, NUM_CLASSES)
            if (i + 1) % 20 == 0:
                print(f"{i + 1}/{len(val)} photos", flush=True)
    for scale in args.scales:
        row = {}
        for on in (False, True):
            scores = scores_from_confusion(confusion[(scale, on)])
            row["pass2" if on else "pass1"] = {
                **{g: round(float(scores[g]), 4) for g in GROUPS},
                "photos_with_crops": used[(scale, on)],
                "s_per_photo": round(seconds[(scale, on)] / len(val), 3)}
        results["scales"][str(scale)] = row
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results, indent=1))
    print("| scale | pass 2 | overall F1 | brows | eyes | nose | mouth | skin | hair | photos with crops "
          "| s/photo |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scale, row in results["scales"].items():
        for arm, r in row.items():
            print(f"| {scale} | {'on' if arm == 'pass2' else 'off'} | "
                  + " | ".join(f"{r[g]:.3f}" for g in GROUPS)
                  + f" | {r['photos_with_crops']}/{len(val)} | {r['s_per_photo']:.2f} |")


if __name__ == "__main__":
    main()
