"""End to end on CPU: a 12 MP JPEG in, a portrait JPEG out, as ``portraitseg render`` does it.

Each measured render is :func:`portraitseg.cli.render.render_file` -- decode (EXIF-upright),
letterbox + segment at the model's input size, subject alpha (person extension, guided
refinement at full resolution), the preset's blur + composite, JPEG encode -- with the job
(model + renderer) built once by :func:`portraitseg.cli.render.build_job` from a normal command
line, as a long-running app would. Runs in a fresh child process limited to ``--threads``
threads (torch and OpenCV); median wall time of ``--runs`` renders after one warm-up render,
the time of each stage of one extra render, and the child's peak RSS (``ru_maxrss``: model,
libraries and the render together) and its RSS before the first render.

Goal (issue 6): <= 2 s median and <= 3 GB peak RSS on 2 CPU cores.

The photo: a synthetic portrait (``portraitseg.data.synthetic``) upscaled to 4000x3000 with
sensor-like noise, JPEG quality 92 (written once to ``data/bench_e2e/``). The model: ``--ckpt``,
default the newest ``outputs/helen_cpu/runs/*/checkpoints/last.ckpt`` (the recorded CPU run's
U-Net EfficientNet-Lite0), else a randomly initialised model of the same architecture (same
compute, meaningless mask).

    python experiments/bench_e2e/bench.py                                   # the recorded run
    python experiments/bench_e2e/bench.py --size 800 600 --runs 1           # smoke test
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
WORK = REPO / "data" / "bench_e2e"


def make_photo(path: Path, width: int, height: int) -> Path:
    import cv2
    import numpy as np
    from PIL import Image

    from portraitseg.data.synthetic import make_sample

    base = make_sample(0, seed=0, size=(height // 4, width // 4)).image
    photo = cv2.resize(base, (width, height), interpolation=cv2.INTER_CUBIC).astype(np.float32)
    photo += np.random.default_rng(0).normal(0.0, 3.0, photo.shape).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8)).save(path, quality=92)
    return path


def default_checkpoint() -> Path:
    found = sorted(REPO.glob("outputs/helen_cpu/runs/*/checkpoints/last.ckpt"),
                   key=lambda p: p.stat().st_mtime)
    if found:
        return found[-1]
    import torch

    from portraitseg.models import create_model

    path = WORK / "random_unet_efficientnet_lite0.ckpt"
    if not path.exists():
        config = {"_target_": "portraitseg.models.create_model", "arch": "unet",
                  "encoder_name": "tu-efficientnet_lite0", "encoder_weights": None, "classes": 11,
                  "decoder_channels": [96, 64, 32, 16, 16]}
        net = create_model(**{k: v for k, v in config.items() if k != "_target_"})
        WORK.mkdir(parents=True, exist_ok=True)
        torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()},
                    "pytorch-lightning_version": "2.6.6", "hyper_parameters": {"net": config},
                    "datamodule_hyper_parameters": {"image_size": 256}}, path)
    return path


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def child(args: argparse.Namespace) -> dict:
    """Runs in the measured process."""
    import cv2
    import torch

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    from portraitseg.cli import render as R
    from portraitseg.cli.main import build_parser
    from portraitseg.io import read_image, write_image

    out_dir = WORK / "out"
    cli = ["render", str(args.photo), "--ckpt", str(args.ckpt), "-o", str(out_dir), "--overwrite", "-q"]
    if args.render:
        cli += ["--render", args.render]
    job = R.build_job(build_parser().parse_args(cli))
    out = out_dir / "portrait.jpg"
    out_dir.mkdir(parents=True, exist_ok=True)
    rss_before = rss_mb()
    times = []
    with torch.inference_mode():
        for i in range(args.runs + 1):
            t0 = time.perf_counter()
            R.render_file(job, args.photo, out, None)
            if i:
                times.append(time.perf_counter() - t0)
        stages, t = {}, time.perf_counter()  # one more render, stage by stage (render_file's steps)

        def lap(name: str) -> None:
            nonlocal t
            now = time.perf_counter()
            stages[name] = now - t
            t = now

        rgb = read_image(args.photo, max_pixels=job.max_pixels)
        lap("decode")
        probs = R.segment(job.model, rgb, job.tta)
        lap("segment")
        image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)
        alpha, _ = R.subject_alpha_for(job, image, probs)
        lap("subject alpha")
        portrait, _ = (job.renderer(image, probs=probs) if alpha is None
                       else job.renderer(image, alpha=alpha.to(image.dtype)))
        lap("render (refine, blur, composite)")
        write_image(out, R._to_uint8(portrait), quality=job.quality)
        lap("to uint8 + encode")
    return {
        "photo": str(args.photo), "megapixels": rgb.shape[0] * rgb.shape[1] / 1e6,
        "ckpt": str(args.ckpt), "model_size": job.model.size, "subject": job.subject,
        "threads": args.threads, "runs_s": times, "median_s": statistics.median(times),
        "stages_s": stages, "rss_before_render_mb": rss_before,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photo", type=Path, help="a JPEG (default: a generated 12 MP photo)")
    parser.add_argument("--size", type=int, nargs=2, default=[4000, 3000], metavar=("W", "H"),
                        help="size of the generated photo")
    parser.add_argument("--ckpt", type=Path, help="segmenter checkpoint (default: see module doc)")
    parser.add_argument("--render", help="render preset (default: the CLI's)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args)))
        return

    w, h = args.size
    photo = args.photo or WORK / f"photo_{w}x{h}.jpg"
    if not photo.exists():
        make_photo(photo, w, h)
    ckpt = args.ckpt or default_checkpoint()
    cmd = [sys.executable, __file__, "--child", "--photo", str(photo), "--ckpt", str(ckpt),
           "--threads", str(args.threads), "--runs", str(args.runs)]
    cmd += ["--render", args.render] if args.render else []
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"benchmark child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(line[7:])
    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines()
                if x.startswith("model name")), platform.processor())
    result["machine"] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                         "load_avg_before": os.getloadavg()}
    result["photo_bytes"] = photo.stat().st_size
    args.out.write_text(json.dumps(result, indent=1))
    print(f"{result['megapixels']:.1f} MP, {args.threads} threads, model input {result['model_size']} px, "
          f"subject {result['subject']}: median {result['median_s']:.2f} s over {args.runs} runs, "
          f"peak RSS {result['peak_rss_mb']:.0f} MB "
          f"(before rendering {result['rss_before_render_mb']:.0f} MB)")
    print("stages: " + ", ".join(f"{k} {v:.3f} s" for k, v in result["stages_s"].items()))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
