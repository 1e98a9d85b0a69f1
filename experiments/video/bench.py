"""Video portraits: edge flicker, lag and speed of the temporal smoothing (portraitseg.video).

Two clips are made from a real CCP photo and its hand-labelled person mask, so the true alpha of
every frame is known by construction:

* ``pan_zoom``: a slow pan and zoom over the photo (a 16:9 window drifting and closing in);
* ``crossing``: the person cut out with the mask and pasted, walking across a static scene
  (scikit-image's rocket photo).

Each frame gets sensor-like noise (sigma 2/255, new every frame), as a camera's frames do. The
bundled model's subject alpha of every frame is computed once, as a clip's frames are segmented
(``frame_alpha``: one pass, the subject alpha, the main subjects chosen), then run through each
arm:

* ``independent``: every frame on its own (no smoothing);
* ``smoothed``: :class:`~portraitseg.video.temporal.TemporalSmoother` with its defaults, as
  ``render_clip`` runs it (flow-following, each frame final once the next is seen: ``look_ahead``);
* ``smoothed_causal``: the same without looking ahead (``ahead=0``);
* ``smoothed_no_flow``: the default with the plain per-pixel frame difference;
* ``every_k``: the matte on every k-th frame only, carried by the flow between (and smoothed).

A third clip, ``crossing_fast`` (the crossing in half the frames, other noise), is scored the same
way as a check: the defaults were chosen on the first two.

Metrics per arm: flicker = mean |alpha_t - alpha_{t-1}| over the pixels whose true alpha does not
change between the two frames; IoU (alpha > 0.5) and MAD against the true alpha (the moving
person's, for ``crossing``). Speed: ``render_clip`` end to end (decode, segment, smooth, render,
H.264 encode) on a crossing clip at ``--speed-size``, frames/s with the matte every frame and every
k-th frame. A strip of the crossing clip (original above portrait) is written with ``--strip``.

    .venv/bin/python experiments/video/bench.py --frames 24 --size 640x360 --speed-size 1280x720 \
        --speed-frames 24 --speed-runs 3 --every 3 --sweep --out experiments/video/results.json \
        --strip experiments/video/strip.png
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import torch
from PIL import Image

from portraitseg.pipeline import PortraitPipeline, stack_images, to_uint8
from portraitseg.video.run import frame_alpha, render_clip
from portraitseg.video.temporal import TemporalSmoother

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("PORTRAITSEG_SHARED_DATA", REPO.parent / "shared" / "data"))
CCP = SHARED / "ccp_person"


def load_person(stem: str) -> tuple[np.ndarray, np.ndarray]:
    """A CCP photo ``(H, W, 3)`` float32 in [0, 1] and its person mask ``(H, W)`` in {0, 1}."""
    rgb = np.asarray(Image.open(CCP / "images" / f"{stem}.jpg").convert("RGB"), np.float32) / 255
    mask = (np.asarray(Image.open(CCP / "masks" / f"{stem}.png")) > 127).astype(np.float32)
    return rgb, mask


def noisy(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` in [0, 1] with sensor-like noise, as uint8."""
    return np.clip((rgb + rng.normal(0, 2 / 255, rgb.shape)) * 255 + 0.5, 0, 255).astype(np.uint8)


def pan_zoom(n: int, size: tuple[int, int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` frames ``(frame uint8, true alpha)`` of a 16:9 window drifting and zooming over a photo."""
    rgb, mask = load_person("0001")
    h, w = rgb.shape[:2]
    width, height = size
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):  # per frame: the window 0.25% narrower, 0.1% of the width across and up
        win_w = w * 0.98 * 0.9975 ** i
        cx, cy = w * (0.46 + 0.001 * i), h * (0.2 - 0.001 * i)  # head and shoulders
        s = width / win_w
        affine = np.float32([[s, 0, width / 2 - s * cx], [0, s, height / 2 - s * cy]])
        img, alpha = (cv2.warpAffine(x, affine, (width, height), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT) for x in (rgb, mask))
        frames.append((noisy(img, rng), alpha))
    return frames


def crossing(n: int, size: tuple[int, int], seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` frames of a CCP person pasted walking left to right across a static scene."""
    from skimage import data

    rgb, mask = load_person("0002")
    ys, xs = np.nonzero(mask)
    box = slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1)
    rgb, mask = rgb[box], mask[box]
    width, height = size
    scene = cv2.resize(data.rocket().astype(np.float32) / 255, (width, height), interpolation=cv2.INTER_AREA)
    ph = int(height * 0.85)
    pw = max(1, round(rgb.shape[1] * ph / rgb.shape[0]))
    person = cv2.resize(rgb, (pw, ph), interpolation=cv2.INTER_AREA)
    matte = cv2.resize(mask, (pw, ph), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(seed)
    frames = []
    for t in np.linspace(0, 1, n):
        x = int(round(width * (0.1 + 0.5 * t)))
        alpha = np.zeros((height, width), np.float32)
        alpha[height - ph:, x:x + pw] = matte[:, : width - x]
        layer = np.zeros_like(scene)
        layer[height - ph:, x:x + pw] = person[:, : width - x]
        img = alpha[..., None] * layer + (1 - alpha[..., None]) * scene
        frames.append((noisy(img, rng), alpha))
    return frames


def segment(pipeline: PortraitPipeline, frames: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list, list]:
    """Each frame's image ``(1, 3, H, W)`` and raw subject alpha ``(1, 1, h, w)``, as a clip's frames
    are segmented (``frame_alpha`` without smoothing)."""
    images, alphas = [], []
    with torch.inference_mode():
        for rgb, _ in frames:
            image = stack_images(rgb, None)
            alpha, _ = frame_alpha(pipeline, image, None, True)
            images.append(image)
            alphas.append(alpha.float())
    return images, alphas


def clip_alphas(smoother: TemporalSmoother, images: list, alphas: list, every: int = 1) -> list[torch.Tensor]:
    """The final alpha of each frame as ``render_clip`` makes it: smoothed (or carried by the flow
    on frames not segmented), then final once the next frame is seen (``look_ahead``)."""
    out, held = [], None
    with torch.inference_mode():
        for i, (a, im) in enumerate(zip(alphas, images, strict=True)):
            newest = smoother(a, im) if i % every == 0 else smoother.propagate(im)
            if held is not None:
                out.append(smoother.look_ahead(held))
            held = newest
    return [*out, held]


def arms(images: list, alphas: list, every: int) -> dict[str, list[torch.Tensor]]:
    """The alphas of every arm, from the same raw per-frame alphas."""
    return {"independent": alphas,
            "smoothed": clip_alphas(TemporalSmoother(), images, alphas),
            "smoothed_causal": clip_alphas(TemporalSmoother(ahead=0.0), images, alphas),
            "smoothed_no_flow": clip_alphas(TemporalSmoother(motion=False), images, alphas),
            f"every_{every}": clip_alphas(TemporalSmoother(), images, alphas, every)}


def scores(alphas: list[torch.Tensor], frames: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Flicker on the pixels whose true alpha is unchanged (all of them; those in the person's band in
    this frame or the previous; those outside it); IoU (alpha > 0.5) and MAD against the true alpha
    over the frame and in the person's band (the true mask dilated by 5% of the width: where a
    lagging edge shows)."""
    grid = tuple(alphas[0].shape[-2:])
    truths = [cv2.resize(t, grid[::-1], interpolation=cv2.INTER_AREA) for _, t in frames]
    radius = max(1, round(0.05 * grid[1]))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    rows: dict[str, list[float]] = {k: [] for k in ("flicker", "flicker_band", "flicker_far", "iou", "mad",
                                                     "band_iou", "band_mad")}
    for i, (alpha, truth) in enumerate(zip(alphas, truths, strict=True)):
        a = alpha[0, 0].float().numpy()
        band = cv2.dilate((truth > 0.02).astype(np.uint8), disc) > 0
        if i:
            still = np.abs(truth - truths[i - 1]) < 1 / 255
            change = np.abs(a - alphas[i - 1][0, 0].float().numpy())
            near = band | (cv2.dilate((truths[i - 1] > 0.02).astype(np.uint8), disc) > 0)
            parts = (("flicker", still), ("flicker_band", still & near), ("flicker_far", still & ~near))
            for key, where in parts:
                rows[key].append(float(change[where].mean()) if where.any() else 0.0)
        for prefix, where in (("", np.ones_like(band)), ("band_", band)):
            pred, true = a[where] > 0.5, truth[where] > 0.5
            rows[f"{prefix}iou"].append(float((pred & true).sum() / max(1, (pred | true).sum())))
            rows[f"{prefix}mad"].append(float(np.abs(a[where] - truth[where]).mean()))
    return {k: statistics.mean(v) for k, v in rows.items()}


def sweep(images: list, alphas: list, frames: list) -> dict[str, dict[str, float]]:
    """Scores of the flow-following smoother at each ``strength``, ``threshold`` and ``ahead``."""
    out = {}
    for strength in (0.5, 0.7, 0.8, 0.85, 0.9):
        for threshold in (0.03, 0.05, 0.08):
            for ahead in (0.0, 0.25, 0.33, 0.5):
                seq = clip_alphas(TemporalSmoother(strength, threshold, ahead=ahead), images, alphas)
                out[f"{strength}/{threshold}/{ahead}"] = scores(seq, frames)
    return out


def write_clip(path: Path, frames: list[tuple[np.ndarray, np.ndarray]], rate: int = 25) -> Path:
    """The frames as an H.264 MP4 (the input of the speed rows)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=rate, options={"crf": "18"})
        stream.height, stream.width = frames[0][0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for i, (rgb, _) in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, rate)
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def speed(pipeline: PortraitPipeline, size: tuple[int, int], n: int, every: int,
          runs: int) -> dict[str, float]:
    """Frames/s of ``render_clip`` (decode .. encode) on a crossing clip, every frame and every k-th,
    as ``portraitseg render`` runs clips (one pass: no face pass; frames rendered side by side on
    the CPU) and with ``--video-faces``; the baseline ``one_at_a_time_``: one frame rendered at a
    time on all cores (``threads`` = the usable cores). Median of ``runs`` runs, settings
    interleaved."""
    from portraitseg.runtime import usable_cores

    one_pass = pipeline.with_options(face_pass=False)
    arms = (("", one_pass, None), ("one_at_a_time_", one_pass, usable_cores()), ("faces_", pipeline, None))
    settings = {f"{name}every_{k}": (pipe, k, threads) for name, pipe, threads in arms for k in (1, every)}
    seconds: dict[str, list[float]] = {key: [] for key in settings}
    with tempfile.TemporaryDirectory() as tmp:
        src = write_clip(Path(tmp) / "in.mp4", crossing(n, size, seed=1))
        for _ in range(runs):
            for key, (pipe, k, threads) in settings.items():
                result = render_clip(pipe, src, Path(tmp) / f"out_{key}.mp4", every=k, threads=threads)
                seconds[key].append(result.seconds)
    out = {}
    for key, values in seconds.items():
        name, _, k = key.rpartition("every_")
        out[f"{name}seconds_every_{k}"] = statistics.median(values)
        out[f"{name}fps_every_{k}"] = n / statistics.median(values)
    out["side_by_side_speedup_every_1"] = out["one_at_a_time_seconds_every_1"] / out["seconds_every_1"]
    return out


def steps(pipeline: PortraitPipeline, size: tuple[int, int], runs: int = 2) -> dict[str, float]:
    """Median seconds of each step on one frame at ``size``: segment (``frame_alpha`` unsmoothed),
    smooth (flow + blend), propagate (flow + warp), render (the default preset, and the paper's
    ``gaussian`` preset for comparison)."""
    frames = crossing(runs + 1, size, seed=2)
    times: dict[str, list[float]] = {k: [] for k in ("segment", "smooth", "propagate", "render")}
    smoother = TemporalSmoother()
    with torch.inference_mode():
        for rgb, _ in frames:
            image = stack_images(rgb, None)
            t0 = time.perf_counter()
            alpha, _ = frame_alpha(pipeline, image, None, True)
            t1 = time.perf_counter()
            alpha = smoother(alpha.float(), image)
            t2 = time.perf_counter()
            smoother.propagate(image)
            t3 = time.perf_counter()
            pipeline.render(image, alpha, in_place=True)
            t4 = time.perf_counter()
            for key, value in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
                times[key].append(value)
    light = PortraitPipeline.from_pretrained("default", render="gaussian", device="cpu")
    one_pass = pipeline.with_options(face_pass=False)
    with torch.inference_mode():
        for rgb, _ in frames:  # the paper's plain Gaussian preset, for comparison; one pass (clips)
            image = stack_images(rgb, None)
            t0 = time.perf_counter()
            light.render(image, alpha, in_place=True)
            times.setdefault("render_gaussian", []).append(time.perf_counter() - t0)
            image = stack_images(rgb, None)
            t0 = time.perf_counter()
            frame_alpha(one_pass, image, None, True)
            times.setdefault("segment_one_pass", []).append(time.perf_counter() - t0)
    return {f"{k}_s": statistics.median(v[1:]) for k, v in times.items()}  # the first frame: warm-up


def strip(pipeline: PortraitPipeline, frames: list, images: list, alphas: list, path: Path) -> None:
    """5 frames, original above portrait (the smoothed alpha), at half size."""
    picks = np.linspace(0, len(frames) - 1, 5).round().astype(int)
    top, bottom = [], []
    with torch.inference_mode():
        for i in picks:
            portrait, _ = pipeline.render(images[i].clone(), alphas[i])
            h, w = frames[i][0].shape[:2]
            half = (w // 2, h // 2)
            top.append(cv2.resize(frames[i][0], half, interpolation=cv2.INTER_AREA))
            bottom.append(cv2.resize(to_uint8(portrait[0]), half, interpolation=cv2.INTER_AREA))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.vstack([np.hstack(top), np.hstack(bottom)])).save(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--size", default="640x360", help="WxH of the quality clips")
    parser.add_argument("--speed-size", default="1280x720")
    parser.add_argument("--speed-frames", type=int, default=8)
    parser.add_argument("--speed-runs", type=int, default=3, help="runs of each speed setting (median)")
    parser.add_argument("--every", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--strip", type=Path)
    parser.add_argument("--sweep", action="store_true", help="also score strengths x thresholds")
    parser.add_argument("--speed-only", action="store_true", help="only the speed rows (no quality clips)")
    parser.add_argument("--no-speed", action="store_true", help="only the quality clips (no speed rows)")
    args = parser.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    speed_size = tuple(int(v) for v in args.speed_size.split("x"))
    pipeline = PortraitPipeline.from_pretrained("default", device="cpu")
    one_pass = pipeline.with_options(face_pass=False)  # clips are segmented in one pass by default
    results: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
                     "threads": torch.get_num_threads(), "size": args.size, "frames": args.frames,
                     "load_average_1min_start": os.getloadavg()[0]}
    clips = (("pan_zoom", pan_zoom, args.frames, 0), ("crossing", crossing, args.frames, 0),
             ("crossing_fast", crossing, max(3, args.frames // 2), 5))
    for name, make, count, seed in () if args.speed_only else clips:
        frames = make(count, size, seed=seed)
        start = time.perf_counter()
        images, alphas = segment(one_pass, frames)
        results[f"{name}_segment_s_per_frame"] = (time.perf_counter() - start) / len(frames)
        every_arm = arms(images, alphas, args.every)
        results[name] = {arm: scores(seq, frames) for arm, seq in every_arm.items()}
        if args.sweep and name != "crossing_fast":
            results[f"{name}_sweep"] = sweep(images, alphas, frames)
        print(name, json.dumps(results[name], indent=1), flush=True)
        if name == "crossing" and args.strip:
            strip(pipeline, frames, images, every_arm["smoothed"], args.strip)
    if not args.no_speed:
        results["speed"] = {"size": args.speed_size, "frames": args.speed_frames, "runs": args.speed_runs,
                            **speed(pipeline, speed_size, args.speed_frames, args.every, args.speed_runs),
                            **steps(pipeline, speed_size)}
        print(json.dumps(results["speed"], indent=1))
    results["load_average_1min_end"] = os.getloadavg()[0]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
