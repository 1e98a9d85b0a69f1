"""End to end on CPU: JPEG in -> portrait JPEG out, ``portraitseg render`` against the paper's
OpenCV pipeline and against the previous default, side by side in one process.

Arms (each a whole photo -> file round trip, decode and encode included):

* ``pipeline``: :func:`portraitseg.cli.photos.render_file` with the job a plain
  ``portraitseg render PHOTO`` builds (bundled model, default preset ``disc``):
  :class:`portraitseg.pipeline.PortraitPipeline`, both passes, the fast render.
* ``pipeline_reference``: the same job with the full-resolution reference render (``fast=False``):
  the speed-up of the fast render alone.
* ``previous``: the previous default: the previous bundled model (a face-only parser, so the
  GrabCut person extension), no face pass, the reference render -- what ``portraitseg render``
  did before this issue.
* ``opencv``: the naive pipeline a user writes in ten lines: ``cv2.imread``, float32,
  ``cv2.GaussianBlur`` with the paper's sigma (0.012 x the short side, 36 px at 12 MP), a blend with
  a mask read from a PNG (the ``pipeline`` arm's ``--save-alpha`` output), ``cv2.imwrite``.

Timing: ``--threads`` threads (torch and OpenCV), one warm-up then ``--runs`` rounds, the arms
interleaved within each round (A B C D A B C D ...), median per arm; plus one stage breakdown of
the pipeline (decode, pass 1, pass 2, subject alpha, render, encode). Peak RSS: each arm again in
a fresh child process (``ru_maxrss`` of the child: libraries, model and the renders). Error of the
fast render against the reference: on each photo's pipeline alpha, PSNR / mean / p99 / max of
``|fast - reference|`` in 8-bit levels.

The photos: scikit-image's ``astronaut`` cropped to 4:3, upscaled (bicubic) to 4000x3000 and
1152x864 with sensor-like noise, JPEG quality 92 (written once to ``data/bench_pipeline/``).

    python experiments/bench_pipeline/bench.py                       # the recorded run
    python experiments/bench_pipeline/bench.py --sizes 640x480 --runs 1 --no-rss   # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / "data" / "bench_pipeline"
#: the commit that bundled the previous default model (HELEN* face parser, no person head)
PREVIOUS_COMMIT = "861331d"
ARMS = ("pipeline", "pipeline_reference", "previous", "opencv")


def make_photo(path: Path, width: int, height: int) -> Path:
    import cv2
    import numpy as np
    import skimage.data

    rgb = skimage.data.astronaut()[64:448]  # 384 x 512: 4:3
    photo = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    photo += np.random.default_rng(0).normal(0.0, 3.0, photo.shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.clip(photo, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, 92])
    return path


def previous_model() -> Path:
    path = WORK / "previous_default.pt"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = subprocess.run(["git", "show", f"{PREVIOUS_COMMIT}:src/portraitseg/weights/default.pt"],
                              cwd=REPO, check=True, capture_output=True).stdout
        path.write_bytes(blob)
    return path


def build_jobs(arms: list[str], threads: int) -> dict:
    import cv2
    import torch

    from portraitseg.cli.main import build_parser
    from portraitseg.cli.render import build_job

    torch.set_num_threads(threads)
    cv2.setNumThreads(threads)
    parser = build_parser()
    jobs = {}
    for arm in arms:
        if arm == "opencv":
            continue
        argv = ["render", "x.jpg", "--device", "cpu"]
        if arm == "previous":
            argv += ["--ckpt", str(previous_model())]
        job = build_job(parser.parse_args(argv))
        if arm != "pipeline":
            job.pipeline.fast = False
        if arm == "previous":
            job.pipeline.face_pass = False
        jobs[arm] = job
    return jobs


def opencv_portrait(src: Path, mask: Path, out: Path) -> None:
    """The paper's render in OpenCV: blur the whole photo, blend with the mask."""
    import cv2
    import numpy as np

    image = cv2.imread(str(src)).astype(np.float32)
    alpha = cv2.imread(str(mask), cv2.IMREAD_GRAYSCALE).astype(np.float32)[..., None] / 255
    blurred = cv2.GaussianBlur(image, (0, 0), 0.012 * min(image.shape[:2]))
    portrait = (alpha * image + (1 - alpha) * blurred).astype(np.uint8)
    cv2.imwrite(str(out), portrait, [cv2.IMWRITE_JPEG_QUALITY, 95])


def run_arm(arm: str, jobs: dict, src: Path, out: Path, mask: Path) -> float:
    from portraitseg.cli.photos import render_file

    t0 = time.perf_counter()
    if arm == "opencv":
        opencv_portrait(src, mask, out)
    else:
        render_file(jobs[arm], src, out, None, mask if arm == "pipeline" else None)
    return time.perf_counter() - t0


def stages(job, src: Path, out: Path) -> dict[str, float]:
    """One pipeline render split into its steps (seconds)."""
    import torch

    from portraitseg.io import read_image, write_image
    from portraitseg.pipeline import to_uint8

    pipe = job.pipeline
    times: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        times[name] = now - t
        t = now

    with torch.inference_mode():
        rgb = read_image(src, max_pixels=job.max_pixels)
        lap("decode")
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)
        lap("to float")
        face = pipe.face_pass
        pipe.face_pass = False
        pipe.parse(image)
        lap("pass 1 (+ parse grid)")
        pipe.face_pass = face
        parse, person, _, used = pipe.parse(image)
        lap("pass 1 + pass 2")
        times["pass 2"] = times["pass 1 + pass 2"] - times["pass 1 (+ parse grid)"]
        times["faces parsed"] = float(used.sum())
        alpha, _ = pipe.subject_alpha(image, parse, person)
        lap("subject alpha")
        portrait, _ = pipe.render(image, alpha)
        lap("render")
        result = to_uint8(portrait[0])
        lap("to uint8")
        write_image(out, result, quality=95)
        lap("encode")
    return times


def render_error(job, src: Path) -> dict[str, float]:
    """The fast render against the full-resolution reference on the pipeline's alpha."""
    import torch

    from portraitseg.io import read_image
    from portraitseg.render.fast import render_portrait_fast

    pipe = job.pipeline
    with torch.inference_mode():
        image = torch.from_numpy(read_image(src)).permute(2, 0, 1)[None].float().div_(255)
        parse, person, _, _ = pipe.parse(image)
        alpha, _ = pipe.subject_alpha(image, parse, person)
        reference, ref_alpha = pipe.renderer(image, alpha=alpha)
        fast, fast_alpha = render_portrait_fast(image, alpha, **pipe.renderer.options)
        diff = (reference - fast).abs().mul_(255)
        mse = float(diff.square().mean())
        sample = diff.flatten()[:: max(1, diff.numel() // 2_000_000)]
        return {"psnr_db": 10 * torch.log10(torch.tensor(255.0**2 / max(mse, 1e-12))).item(),
                "mean_abs": float(diff.mean()), "p99_abs": float(sample.quantile(0.99)),
                "max_abs": float(diff.max()),
                "alpha_mean_abs": float((ref_alpha - fast_alpha).abs().mean() * 255)}


def child(arm: str, size: str, runs: int, threads: int) -> dict:
    src, mask = WORK / f"photo_{size}.jpg", WORK / f"photo_{size}_alpha.png"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    jobs = build_jobs([arm], threads)
    times = [run_arm(arm, jobs, src, WORK / f"out_{arm}_{size}.jpg", mask) for _ in range(runs)]
    return {"arm": arm, "size": size, "median_s": statistics.median(times), "rss_before_mb": before,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["4000x3000", "1152x864"])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    parser.add_argument("--no-rss", action="store_true", help="skip the per-arm child processes")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--child", nargs=2, metavar=("ARM", "SIZE"), help=argparse.SUPPRESS)
    parser.add_argument("--make-photos", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    arms = ["pipeline", *[a for a in args.arms if a != "pipeline"]]  # the pipeline writes the mask
    if args.child:
        print(json.dumps(child(*args.child, runs=max(1, args.runs // 2), threads=args.threads)))
        return
    if args.make_photos:
        for size in args.sizes:
            if not (WORK / f"photo_{size}.jpg").is_file():
                make_photo(WORK / f"photo_{size}.jpg", *map(int, size.split("x")))
        return

    # children first, from a parent that has imported nothing heavy yet: Linux carries the
    # parent's peak RSS into a child's ru_maxrss across fork + exec
    subprocess.run([sys.executable, __file__, "--make-photos", "--sizes", *args.sizes], check=True)
    rss: dict[str, dict] = {size: {} for size in args.sizes}
    if not args.no_rss:
        for size in args.sizes:
            for arm in arms:
                command = [sys.executable, __file__, "--child", arm, size, "--runs", str(args.runs),
                           "--threads", str(args.threads)]
                done = subprocess.run(command, capture_output=True, text=True, check=True)
                rss[size][arm] = json.loads(done.stdout.strip().splitlines()[-1])

    import torch

    from portraitseg.cli.render import default_model_path

    jobs = build_jobs(arms, args.threads)
    new = jobs["pipeline"]
    results: dict = {"machine": {"cpu_count": os.cpu_count(), "threads": args.threads,
                                 "platform": platform.platform(), "torch": torch.__version__,
                                 "model": str(default_model_path()),
                                 "person_head": bool(new.pipeline.person_head)},
                     "runs": args.runs, "sizes": {}}
    for size in args.sizes:
        src, mask = WORK / f"photo_{size}.jpg", WORK / f"photo_{size}_alpha.png"
        out = {arm: WORK / f"out_{arm}_{size}.jpg" for arm in arms}
        for arm in arms:  # warm-up (the pipeline's writes the mask the OpenCV arm reads)
            run_arm(arm, jobs, src, out[arm], mask)
        times: dict[str, list[float]] = {arm: [] for arm in arms}
        for _ in range(args.runs):
            for arm in arms:
                times[arm].append(run_arm(arm, jobs, src, out[arm], mask))
        entry = {"median_s": {arm: statistics.median(t) for arm, t in times.items()}, "all_s": times,
                 "stages_s": stages(new, src, WORK / f"out_stages_{size}.jpg"),
                 "fast_vs_reference": render_error(new, src), "rss": rss[size]}
        results["sizes"][size] = entry
        print(json.dumps({size: {k: v for k, v in entry.items() if k != "all_s"}}, indent=1))
    Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
