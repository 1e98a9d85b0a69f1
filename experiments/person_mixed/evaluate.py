"""Score two-output models on the val splits of data=mixed at native resolution.

For each model: Helen per-class and overall F1 on HELEN* val (native 256x256 labels), person IoU /
boundary F / MAD on CCP val (hand labels, native size) and on HELEN* val (teacher mattes), with the
model run as `portraitseg render` runs it (long side = --size, letterboxed, flip TTA, outputs
resized back to the photo). ``--timing`` times every model on one 512x384 photo in one process
(run it on an idle machine).

    python experiments/person_mixed/evaluate.py --ckpt a.ckpt b.ckpt --name a b \
        --out experiments/person_mixed/results_ablation.json [--figure fig.png] [--timing]

The val splits are exactly those of training (same sources, val_fraction 0.1, split_seed 0).
A model without a person head (a Helen-only parser) is scored on the Helen parse only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from portraitseg.classes import CLASS_NAMES, NUM_CLASSES, flip_logits
from portraitseg.data.mixed import MixedDataModule, load_targets
from portraitseg.data.transforms import EvalTransform
from portraitseg.lit.metrics import HelenMetrics, PersonMetrics
from portraitseg.models.checkpoint import load_segmenter

SHARED = Path(
    os.environ.get("PORTRAITSEG_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data")
)
SOURCES = {
    "helenstar": {
        "root": str(SHARED / "helenstar"),
        "layout": "helenstar",
        "parse": True,
        "person": "person/person_{num}.png",
        "val_fraction": 0.1,
    },
    "ccp": {
        "root": str(SHARED / "ccp_person"),
        "layout": "folder",
        "parse": False,
        "person": "label",
        "val_fraction": 0.1,
    },
}


@torch.inference_mode()
def predict(
    net: torch.nn.Module, rgb: np.ndarray, size: int, tta: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Class probabilities ``(1, K, H, W)`` and person matte ``(1, 1, H, W)`` (None without a person
    head) at the photo's size."""
    out = EvalTransform(size)(image=rgb, mask=np.zeros(rgb.shape[:2], np.uint8))
    h, w = out["valid_size"]
    x = torch.from_numpy(out["image"]).permute(2, 0, 1)[None].float().div(255)
    logits, person = net.segment(x)
    if tta:
        m_logits, m_person = net.segment(x.flip(-1))
        logits = 0.5 * (logits + flip_logits(m_logits))
        person = None if person is None else 0.5 * (person + m_person.flip(-1))
    native = rgb.shape[:2]
    logits = F.interpolate(logits[..., :h, :w], size=native, mode="bilinear", align_corners=False)
    if person is None:
        return logits.softmax(1), None
    person = F.interpolate(person[..., :h, :w], size=native, mode="bilinear", align_corners=False)
    return logits.softmax(1), person.sigmoid()


def evaluate(path: str, size: int, tta: bool, splits: dict, limit: int | None) -> dict:
    net, info = load_segmenter(path)
    person_head = bool(getattr(net, "person_head", False))
    result: dict = {
        "model": path,
        "size": size,
        "tta": tta,
        "epoch": info.get("epoch"),
        "global_step": info.get("global_step"),
    }
    for source, samples in splits.items():
        parse_metrics, person_metrics = HelenMetrics(NUM_CLASSES), PersonMetrics()
        if not person_head and all(sample.parse is None for sample in samples):
            continue  # nothing this model predicts is labelled here
        for sample in samples[:limit]:
            rgb, parse, matte = load_targets(sample)
            probs, person = predict(net, rgb, size, tta)
            if sample.parse is not None:
                parse_metrics.update(probs.argmax(1), torch.from_numpy(parse).long()[None])
            if person is not None:
                person_metrics.update(person, torch.from_numpy(matte).float()[None, None] / 255)
        scores = {k: float(v) for k, v in person_metrics.compute().items()} if person_head else {}
        if int(parse_metrics.confusion.sum()):
            helen = parse_metrics.compute()
            scores.update(
                {k: float(helen[k]) for k in ("f1_overall", "f1_brows", "f1_eyes", "f1_nose", "f1_mouth")}
            )
            scores.update({f"f1/{n}": float(helen[f"f1/{n}"]) for n in CLASS_NAMES})
        result[source] = {"n": len(samples[:limit]), **scores}
    return result


@torch.inference_mode()
def time_512(net: torch.nn.Module, runs: int = 10) -> float:
    """Median ms of one pass on a 512x384 photo (the model's input at long side 512)."""
    x = torch.rand(1, 3, 512, 384)
    net.segment(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        net.segment(x)
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def figure(path: str, samples: list, out: Path, size: int, n: int = 8) -> None:
    """Rows of photo | person matte | portrait (disc preset) for ``n`` CCP val photos."""
    import cv2
    from PIL import Image

    from portraitseg.pipeline import render_parse, render_preset

    net, _ = load_segmenter(path)
    renderer = render_preset("disc")
    rows = []
    step = max(1, len(samples) // n)
    for sample in samples[::step][:n]:
        rgb, _, _ = load_targets(sample)
        probs, person = predict(net, rgb, size, True)
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div(255)
        with torch.inference_mode():
            portrait, used = render_parse(renderer, image, probs, person)
        to8 = lambda t: (t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
        panels = [rgb, np.repeat(to8(used), 3, axis=2), to8(portrait)]
        h = 300
        panels = [
            cv2.resize(p, (round(p.shape[1] * h / p.shape[0]), h), interpolation=cv2.INTER_AREA)
            for p in panels
        ]
        rows.append(np.concatenate(panels, axis=1))
    width = max(r.shape[1] for r in rows)
    rows = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0))) for r in rows]
    half = (len(rows) + 1) // 2
    left, right = np.concatenate(rows[:half]), np.concatenate(rows[half:] or [np.zeros_like(rows[0])])
    right = np.pad(right, ((0, left.shape[0] - right.shape[0]), (0, 0), (0, 0)))
    Image.fromarray(
        np.concatenate([left, np.full((left.shape[0], 8, 3), 255, np.uint8), right], axis=1)
    ).save(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ckpt", nargs="+", required=True)
    parser.add_argument("--name", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--no-tta", action="store_true")
    parser.add_argument("--limit", type=int, default=None, help="at most this many val photos per source")
    parser.add_argument("--figure", type=Path, help="also draw 8 CCP val photos with the first model")
    parser.add_argument("--timing", action="store_true",
                        help="only time every model (512x384, median of 10) in this one process "
                             "and add ms_512x384 to the results")
    args = parser.parse_args()
    torch.set_num_threads(int(os.environ.get("EVAL_THREADS", "2")))
    names = args.name or [Path(c).parent.parent.name for c in args.ckpt]
    dm = MixedDataModule(SOURCES, image_size=args.size, num_workers=0)
    dm.setup()
    splits = {name: dm.splits[name]["val"] for name in dm.val_names}
    results = json.loads(args.out.read_text()) if args.out.is_file() else {}
    if args.timing:
        for name, ckpt in zip(names, args.ckpt, strict=True):
            results.setdefault(name, {})["ms_512x384"] = time_512(load_segmenter(ckpt)[0])
            print(f"{name}: {results[name]['ms_512x384']:.1f} ms / 512x384 photo", flush=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        return
    for name, ckpt in zip(names, args.ckpt, strict=True):
        t = time.time()
        scores = evaluate(ckpt, args.size, not args.no_tta, splits, args.limit)
        results[name] = {**results.get(name, {}), **scores}
        h, c = results[name]["helenstar"], results[name].get("ccp")
        person = ", no person head"
        if c:
            person = (f", ccp IoU {c['person_iou']:.4f} BF {c['person_boundary_f']:.4f} "
                      f"MAD {c['person_mad']:.4f}, helen person IoU {h['person_iou']:.4f}")
        print(
            f"{name}: helen f1_overall {h['f1_overall']:.4f} (brows {h['f1_brows']:.3f}, l/r-brow "
            f"{h['f1/left_brow']:.3f}/{h['f1/right_brow']:.3f}, l/r-eye {h['f1/left_eye']:.3f}/"
            f"{h['f1/right_eye']:.3f}){person} ({time.time() - t:.0f} s)",
            flush=True,
        )
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.figure:
        figure(args.ckpt[0], splits["ccp"], args.figure, args.size)


if __name__ == "__main__":
    main()
