"""Face-finding benchmark: HELEN* val faces pasted at 24-512 px into large people-free scenes.

Photos. Each photo is a 2048x1536 scene: a scikit-image picture with no people (brick, gravel,
grass: tiled; coffee, chelsea (a cat), rocket: upscaled), or a CCP val street photo (portrait
1536x2048; its labelled people are left in place and judged as neither true nor false faces).
Into each, ``--faces`` HELEN* val people are pasted (the 10 % val carve of
:func:`portraitseg.data.datamodule.carve_split` ``(fraction 0.1, seed 0)``: train photos are never
judged), cut out with their person matte and scaled so that their face box (the extent of the
label's skin + facial-feature pixels, classes 1-9) is ``size`` pixels wide, ``size`` cycling
log-uniformly through the bins 24-512 px; people do not overlap each other nor a CCP person.
Besides, the six scikit-image scenes are judged without faces (people-free photos).

Finders (arms). ``parse``: the head regions of the coarse parse (:func:`portraitseg.pipeline.find_heads`,
the finder before); judged against the head box (classes 1-10), which is what it finds.
``parse_gated``: those regions kept only where the person matte covers half the box and
facial-feature classes (brows, eyes, nose, mouth) make up 1 % of it. ``mtcnn``:
:class:`portraitseg.subject.faces.MTCNN` (calibrated face boxes), judged against the face box.

Metrics. Recall by face size (a true box matched by a found box with IoU >= 0.5, greedy by
score), precision (matched / found, all photos; boxes on CCP people not counted), false faces per
megapixel (found boxes matching no pasted face and not on a CCP person: on the pasted photos, and
on the people-free photos),
``framed`` (a crop the pipeline parsed contains the face box and is at most 4x its long side),
and the Helen overall F1 (:func:`portraitseg.lit.metrics.scores_from_confusion`) of the pasted
faces through ``PortraitPipeline.parse`` (``faces=parse`` before, ``faces=mtcnn`` after) by face
size, beside the same faces parsed on their own (the model on the 256 px HELEN* photo, letterboxed to
the pipeline's face-crop size as pass 2 frames a face).

    python experiments/face_finding/bench.py                 # the recorded run (a few minutes)
    python experiments/face_finding/bench.py --quick         # 2 photos, for the tests
    python experiments/face_finding/bench.py --report results.json   # the tables of a saved run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

HERE = Path(__file__).resolve().parent
SHARED = HERE.parents[1].parent / "shared" / "data"
#: face-box width bins (px): [lo, hi)
BINS = (24, 32, 48, 64, 96, 128, 192, 256, 384, 513)
SCENES = ("brick", "gravel", "grass", "coffee", "chelsea", "rocket")
CANVAS = (1536, 2048)  # (H, W) of the scikit-image scenes; CCP photos are (W, H) = (1536, 2048)
ARMS = ("parse", "parse_gated", "mtcnn_0.7", "mtcnn")
FEATURES = (2, 3, 4, 5, 6, 7, 8, 9)


def scene(name: str) -> np.ndarray:
    """A scikit-image picture as a ``CANVAS`` RGB uint8 scene (textures tiled, photos upscaled)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
        img = np.tile(img, (2, 2, 1))  # 1024 px of texture, upscaled 2x: coarse grain
    return cover(img[..., :3], CANVAS)


def cover(img: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize ``img`` to cover ``size`` ``(H, W)``, centre-cropped."""
    import cv2

    h, w = img.shape[:2]
    scale = max(size[0] / h, size[1] / w)
    nh, nw = math.ceil(h * scale), math.ceil(w * scale)
    out = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_CUBIC)
    top, left = (nh - size[0]) // 2, (nw - size[1]) // 2
    return np.ascontiguousarray(out[top : top + size[0], left : left + size[1]])


def class_box(label: np.ndarray, classes: tuple[int, ...]) -> np.ndarray | None:
    """``x0, y0, x1, y1`` (exclusive) of the pixels of ``classes``; None if there are none."""
    ys, xs = np.nonzero(np.isin(label, classes))
    if len(xs) == 0:
        return None
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float64)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of boxes ``a (N, 4)`` and ``b (M, 4)``."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: (x[:, 2:] - x[:, :2]).prod(-1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def match(found: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy IoU >= 0.5 matching of ``found`` (sorted best first) to ``truth``:
    ``(found matched (N,) bool, truth matched (M,) bool)``."""
    overlaps = iou(found, truth)
    f_ok, t_ok = np.zeros(len(found), bool), np.zeros(len(truth), bool)
    for i in range(len(found)):
        if len(truth) == 0:
            break
        cand = np.where(~t_ok, overlaps[i], -1.0)
        j = int(np.argmax(cand))
        if cand[j] >= 0.5:
            f_ok[i], t_ok[j] = True, True
    return f_ok, t_ok


def bin_of(size: float) -> int:
    return int(np.clip(np.searchsorted(BINS, size, side="right") - 1, 0, len(BINS) - 2))


def bin_name(i: int) -> str:
    return f"{BINS[i]}-{BINS[i + 1] - 1}"


def build_photo(index: int, n_faces: int, faces: list, ccp: list, rng: np.random.Generator, cursor: list):
    """One benchmark photo: ``(rgb uint8, people mask (CCP persons) bool, pasted faces)``; each
    pasted face is a dict with its sample index, place and size."""
    import cv2

    from portraitseg.io import read_image, read_label

    if index % 2 == 0 or not ccp:
        rgb = scene(SCENES[(index // 2) % len(SCENES)])
        people = np.zeros(rgb.shape[:2], bool)
        where = SCENES[(index // 2) % len(SCENES)]
    else:
        sample = ccp[(index // 2) % len(ccp)]
        rgb = cover(read_image(sample.image), CANVAS[::-1])
        people = cover(read_label(sample.label), CANVAS[::-1], nearest=True) > 0
        where = f"ccp/{sample.id}"
    rgb = rgb.astype(np.float32)
    h, w = rgb.shape[:2]
    taken = people.copy()
    pasted = []
    for _ in range(n_faces):
        k = cursor[0]
        cursor[0] += 1
        b = k % (len(BINS) - 1)
        size = float(np.exp(rng.uniform(np.log(BINS[b]), np.log(BINS[b + 1] - 1))))
        item = faces[k % len(faces)]
        scale = size / (item["face"][2] - item["face"][0])
        sh, sw = round(256 * scale), round(256 * scale)
        if sh >= h or sw >= w:
            continue
        for _ in range(60):
            top, left = int(rng.integers(0, h - sh)), int(rng.integers(0, w - sw))
            if not taken[top : top + sh, left : left + sw].any():
                break
        else:
            continue
        shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
        face_rgb = cv2.resize(item["rgb"], (sw, sh), interpolation=shrink)
        alpha = cv2.resize(item["matte"], (sw, sh), interpolation=cv2.INTER_LINEAR)[..., None]
        region = rgb[top : top + sh, left : left + sw]
        rgb[top : top + sh, left : left + sw] = alpha * face_rgb + (1 - alpha) * region
        taken[top : top + sh, left : left + sw] = True
        pasted.append({"sample": k % len(faces), "top": top, "left": left, "scale": scale, "side": sh,
                       "width": size})
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8), people, pasted, where


def to_photo(box: np.ndarray, face: dict) -> np.ndarray:
    """A box on the 256 px HELEN* photo -> the benchmark photo's pixels."""
    s = face["side"] / 256
    return box * s + np.array([face["left"], face["top"], face["left"], face["top"]])


def gated_heads(probs, person, head, m: int):
    """``parse_gated``: :func:`find_heads` regions whose box the person matte covers by half and
    facial-feature classes fill by 1 %."""
    import torch

    from portraitseg.pipeline import find_heads

    boxes, area = find_heads(probs, head, m)
    cls = probs.argmax(1)
    feats = torch.zeros_like(cls, dtype=torch.bool)
    for c in FEATURES:
        feats |= cls == c
    keep = []
    for i in range(m):
        x0, y0, x1, y1 = (int(v) for v in boxes[0, i].tolist())
        if area[0, i] <= 0 or x1 <= x0 or y1 <= y0:
            keep.append(False)
            continue
        matte = person[0, 0, y0:y1, x0:x1].mean() if person is not None else torch.tensor(1.0)
        keep.append(bool(matte >= 0.5 and feats[0, y0:y1, x0:x1].float().mean() >= 0.01))
    return boxes, area, torch.tensor([keep])


def report(result: dict) -> str:
    """Markdown tables of a saved run: finders by face size, and the parse F1 by face size."""
    arms = result["arms"]
    lines = ["| finder | " + " | ".join(f"recall {b}" for b in result["bins"])
             + " | recall >= 48 | precision | false / MP (pasted photos) | false / MP (people-free) |",
             "|---" * (len(result["bins"]) + 5) + "|"]
    for arm, r in arms.items():
        cells = ["-" if v is None else f"{v:.2f}" for v in r["recall_by_bin"]]
        lines.append(f"| {arm} | " + " | ".join(cells) + f" | {r['recall_48_up']} | {r['precision']} | "
                     f"{r['false_per_mp_pasted_photos']} | {r['false_per_mp_people_free']} |")
    lines += ["", "| overall F1 | " + " | ".join(result["bins"]) + " | >= 64 px | all |",
              "|---" * (len(result["bins"]) + 3) + "|"]
    names = {"parse": "pipeline, faces=parse (before)", "mtcnn": "pipeline, faces=mtcnn (after)",
             "own": "the face on its own (at the face-crop size)"}
    for key, name in names.items():
        cells = ["-" if v is None else f"{100 * v:.1f}" for v in result["parse_f1"][key]]
        f1 = result["parse_f1"]
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {100 * f1[key + '_64_up']:.1f} | {100 * f1[key + '_all']:.1f} |")
    lines += ["", "| framed (a parsed crop holds the face) | " + " | ".join(result["bins"]) + " |",
              "|---" * (len(result["bins"]) + 1) + "|"]
    for arm in ("parse", "mtcnn"):
        cells = ["-" if v is None else f"{v:.2f}" for v in arms[arm]["framed_by_bin"]]
        lines.append(f"| faces={arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--faces", type=int, default=4, help="faces pasted per photo (at most)")
    parser.add_argument("--quick", action="store_true", help="2 photos of 2 faces, 1 people-free photo")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--face-size", type=int,
                        help="pass 2's face-crop side (default: the model's input size)")
    parser.add_argument("--data", default=str(SHARED))
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--report", metavar="JSON", help="print the tables of a saved run and stop")
    args = parser.parse_args()
    if args.report:
        print(report(json.loads(Path(args.report).read_text())))
        return
    if args.quick:
        args.photos, args.faces = 2, 2

    import cv2
    import torch
    import torch.nn.functional as F

    from portraitseg.classes import NUM_CLASSES
    from portraitseg.data.datamodule import carve_split
    from portraitseg.data.layouts import discover
    from portraitseg.io import read_image, read_label
    from portraitseg.lit.metrics import scores_from_confusion
    from portraitseg.models.inference import segment_letterboxed
    from portraitseg.pipeline import PortraitPipeline, find_heads
    from portraitseg.subject.faces import MIN_FACE, MTCNN, THRESHOLDS, find_faces

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(args.seed)
    data = Path(args.data)
    _, val = carve_split(discover(data / "helenstar", "helenstar")["train"], 0.1, 0)
    _, ccp = carve_split(discover(data / "ccp_person", "folder")["train"], 0.1, 0)
    faces = []
    for sample in val:
        label = read_label(sample.label)
        face, head = class_box(label, tuple(range(1, 10))), class_box(label, tuple(range(1, 11)))
        if face is None or label.shape != (256, 256):
            continue
        num = sample.id.split("_")[-1]
        matte = read_label(data / "helenstar" / "person" / f"person_{num}.png").astype(np.float32) / 255
        faces.append({"id": sample.id, "rgb": read_image(sample.image).astype(np.float32), "label": label,
                      "matte": matte, "face": face, "head": head})
    order = rng.permutation(len(faces))
    faces = [faces[i] for i in order]

    sizes = {} if args.face_size is None else {"face_size": args.face_size}
    pipes = {arm: PortraitPipeline.from_pretrained("default", device="cpu", faces=arm, **sizes)
             for arm in ("parse", "mtcnn")}
    seg = pipes["parse"].segmenter
    detector = MTCNN(min_face=MIN_FACE, thresholds=(*THRESHOLDS[:2], 0.7))  # + the published last threshold
    head_classes = pipes["parse"].head
    m = pipes["parse"].max_faces
    nb = len(BINS) - 1
    stats = {arm: {"tp_truth": np.zeros(nb), "truth": np.zeros(nb), "found": 0, "found_ok": 0,
                   "false_pasted": 0, "false_free": 0, "on_ccp_people": 0, "seconds": 0.0,
                   "true_scores": [], "false_scores": [], "false_boxes": []}
             for arm in ARMS}
    framed = {arm: np.zeros(nb) for arm in ("parse", "mtcnn")}
    conf = {arm: torch.zeros(nb, NUM_CLASSES, NUM_CLASSES, dtype=torch.long)
            for arm in ("parse", "mtcnn", "own")}
    pasted_mp = free_mp = 0.0
    cursor = [0]
    started = time.perf_counter()

    def add_confusion(key: str, b: int, probs: torch.Tensor, label: np.ndarray) -> None:
        truth = torch.from_numpy(label).long()
        pred = probs[0].argmax(0)
        conf[key][b] += torch.bincount(truth.flatten() * NUM_CLASSES + pred.flatten(),
                                       minlength=NUM_CLASSES**2).view(NUM_CLASSES, NUM_CLASSES)

    def detect(arm: str, image: torch.Tensor, probs, person):
        """Found boxes (photo pixels, best first) of one arm."""
        big = image.shape[-2:]
        t0 = time.perf_counter()
        if arm.startswith("mtcnn"):
            if arm == "mtcnn_0.7":
                detected[0] = find_faces(image, detector, 16)
            boxes, scores, used = detected[0]
            used = used & (scores >= (0.7 if arm == "mtcnn_0.7" else THRESHOLDS[2]))
            out = boxes[0][used[0]].numpy().astype(np.float64)
            last_scores[0] = scores[0][used[0]].numpy()
        else:
            if arm == "parse":
                boxes, area = find_heads(probs, head_classes, m)
                keep = area > 0
            else:
                boxes, area, keep = gated_heads(probs, person, head_classes, m)
            gh, gw = probs.shape[-2:]
            sx, sy = big[1] / gw, big[0] / gh
            out = (boxes[0][keep[0]] * torch.tensor([sx, sy, sx, sy])).numpy().astype(np.float64)
        stats[arm]["seconds"] += time.perf_counter() - t0
        return out

    detected: list = [None]
    last_scores: list = [np.zeros(0)]
    with torch.inference_mode():
        for index in range(args.photos):
            rgb, people, pasted, where = build_photo(index, args.faces, faces, ccp, rng, cursor)
            image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)
            h, w = rgb.shape[:2]
            pasted_mp += h * w / 1e6
            probs, person = segment_letterboxed(seg, image, pipes["parse"].model_size)
            for arm in ARMS:
                key = "face" if arm.startswith("mtcnn") else "head"
                truth = np.array([to_photo(faces[p["sample"]][key], p) for p in pasted]).reshape(-1, 4)
                found = detect(arm, image, probs, person)
                f_ok, t_ok = match(found, truth)
                s = stats[arm]
                if arm.startswith("mtcnn"):
                    s["true_scores"] += last_scores[0][f_ok].tolist()
                s["found"] += len(found)
                s["found_ok"] += int(f_ok.sum())
                for p, ok in zip(pasted, t_ok, strict=True):
                    s["truth"][bin_of(p["width"])] += 1
                    s["tp_truth"][bin_of(p["width"])] += ok
                # a false face: matches no pasted face, lies on no pasted person and no CCP person
                for j, (box, ok) in enumerate(zip(found, f_ok, strict=True)):
                    if ok:
                        continue
                    cx = int(np.clip((box[0] + box[2]) / 2, 0, w - 1))
                    cy = int(np.clip((box[1] + box[3]) / 2, 0, h - 1))
                    on_pasted = any(p["left"] <= cx < p["left"] + p["side"]
                                    and p["top"] <= cy < p["top"] + p["side"] for p in pasted)
                    if people[cy, cx]:
                        s["on_ccp_people"] += 1
                    elif not on_pasted:
                        s["false_pasted"] += 1
                        if arm.startswith("mtcnn"):
                            s["false_scores"].append(float(last_scores[0][j]))
                            s["false_boxes"].append([where, [round(float(v)) for v in box]])
            for arm, pipe in pipes.items():
                parse, _, squares, used = pipe.parse(image)
                crops = squares[0][used[0]].numpy()
                gh, gw = parse.shape[-2:]
                for p in pasted:
                    item = faces[p["sample"]]
                    b = bin_of(p["width"])
                    fb = to_photo(item["face"], p)
                    long = max(fb[2] - fb[0], fb[3] - fb[1])
                    inside = [(c[0] <= fb[0] and c[1] <= fb[1] and c[2] >= fb[2] and c[3] >= fb[3]
                               and c[2] - c[0] <= 4 * long) for c in crops]
                    framed[arm][b] += any(inside)
                    # the pasted photo's region of the parse grid, resampled to the 256 px label
                    x0, y0 = p["left"] * gw / w, p["top"] * gh / h
                    x1, y1 = (p["left"] + p["side"]) * gw / w, (p["top"] + p["side"]) * gh / h
                    theta = torch.tensor([[[(x1 - x0) / gw, 0, (x0 + x1) / gw - 1],
                                           [0, (y1 - y0) / gh, (y0 + y1) / gh - 1]]], dtype=torch.float32)
                    grid = F.affine_grid(theta, [1, NUM_CLASSES, 256, 256], align_corners=False)
                    add_confusion(arm, b, F.grid_sample(parse, grid, mode="bilinear", align_corners=False),
                                  item["label"])
            for p in pasted:
                item = faces[p["sample"]]
                own, _ = segment_letterboxed(seg, torch.from_numpy(item["rgb"]).permute(2, 0, 1)[None] / 255,
                                             pipes["parse"].face_size)
                own = F.interpolate(own, size=item["label"].shape, mode="bilinear", align_corners=False)
                add_confusion("own", bin_of(p["width"]), own, item["label"])
            print(f"photo {index + 1}/{args.photos} ({where}): {len(pasted)} faces, "
                  f"{time.perf_counter() - started:.0f} s", flush=True)
        for name in SCENES[: 1 if args.quick else len(SCENES)]:
            rgb = scene(name)
            image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)
            free_mp += rgb.shape[0] * rgb.shape[1] / 1e6
            probs, person = segment_letterboxed(seg, image, pipes["parse"].model_size)
            for arm in ARMS:
                stats[arm]["false_free"] += len(detect(arm, image, probs, person))
                if arm.startswith("mtcnn"):
                    stats[arm]["false_scores"] += last_scores[0].tolist()

    def f1(c: torch.Tensor) -> float | None:
        return None if c.sum() == 0 else round(float(scores_from_confusion(c)["f1_overall"]), 4)

    result = {"photos": args.photos, "faces_per_photo": args.faces, "seed": args.seed, "quick": args.quick,
              "threads": args.threads, "pasted_megapixels": round(pasted_mp, 2),
              "people_free_megapixels": round(free_mp, 2), "bins": [bin_name(i) for i in range(nb)],
              "seconds": round(time.perf_counter() - started, 1), "arms": {}, "parse_f1": {}}
    for arm in ARMS:
        s = stats[arm]
        recall = [None if s["truth"][i] == 0 else round(s["tp_truth"][i] / s["truth"][i], 3)
                  for i in range(nb)]
        big = s["truth"][2:].sum()
        result["arms"][arm] = {
            "faces_by_bin": s["truth"].astype(int).tolist(), "recall_by_bin": recall,
            "recall_48_up": None if big == 0 else round(float(s["tp_truth"][2:].sum() / big), 3),
            "precision": None if s["found"] == s["on_ccp_people"] else
            round(s["found_ok"] / (s["found"] - s["on_ccp_people"]), 3),
            "false_per_mp_pasted_photos": round(s["false_pasted"] / pasted_mp, 3),
            "false_per_mp_people_free": round(s["false_free"] / free_mp, 3) if free_mp else None,
            "found_on_ccp_people": s["on_ccp_people"],
            "lowest_true_score": min(s["true_scores"], default=None),
            "false_scores": sorted(round(v, 4) for v in s["false_scores"]),
            "false_boxes_on_pasted_photos": s["false_boxes"],
            "finder_s_per_photo": round(s["seconds"] / (args.photos + (1 if args.quick else len(SCENES))), 3),
        }
    for key in conf:
        result["parse_f1"][key] = [f1(conf[key][i]) for i in range(nb)]
        result["parse_f1"][key + "_64_up"] = f1(conf[key][3:].sum(0))
        result["parse_f1"][key + "_all"] = f1(conf[key].sum(0))
    for arm in framed:
        result["arms"][arm]["framed_by_bin"] = [
            None if stats[arm]["truth"][i] == 0 else round(framed[arm][i] / stats[arm]["truth"][i], 3)
            for i in range(nb)]
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))
    print(report(result))


if __name__ == "__main__":
    main()
