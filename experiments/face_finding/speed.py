"""Cost of the face finder: MTCNN on 3 MP and 12 MP photos beside the pipeline's own passes, in one
process (medians of ``--runs`` runs after a warm-up), plus building it (weights load). Each time is
given as wall-clock seconds and as the process's CPU seconds (all threads): on a machine shared with
other jobs the CPU time is the steadier measure of the work done.

The photos: scikit-image's astronaut (one face) and coffee (none) upscaled to 2048x1536 and
4000x3000. Timed: ``find_faces`` (the finder; also with ``min_face=48``), ``segment_letterboxed``
(pass 1, the baseline) and ``PortraitPipeline.parse`` (both passes) with ``faces="parse"`` and
``faces="mtcnn"``.

    python experiments/face_finding/speed.py --threads 2 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

HERE = Path(__file__).resolve().parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", nargs="+", default=["2048x1536", "4000x3000"], help="WxH photo sizes")
    parser.add_argument("--out", default=str(HERE / "results_speed.json"))
    args = parser.parse_args()

    import cv2
    import skimage.data
    import torch

    from portraitseg.models.inference import segment_letterboxed
    from portraitseg.pipeline import PortraitPipeline
    from portraitseg.subject.faces import MTCNN, find_faces

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    t0 = time.perf_counter()
    detector = MTCNN()
    build_s = time.perf_counter() - t0
    coarse = MTCNN(min_face=48)
    pipes = {arm: PortraitPipeline.from_pretrained("default", device="cpu", faces=arm)
             for arm in ("parse", "mtcnn")}

    def timed(fn) -> tuple[float, float]:
        """Median ``(wall s, CPU s)`` of ``fn`` after a warm-up."""
        fn()
        wall, cpu = [], []
        for _ in range(args.runs):
            t, c = time.perf_counter(), time.process_time()
            fn()
            wall.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        return round(statistics.median(wall), 3), round(statistics.median(cpu), 3)

    result = {"threads": args.threads, "runs": args.runs, "build_s": round(build_s, 3), "photos": {}}
    with torch.inference_mode():
        for name in ("astronaut", "coffee"):
            for w, h in (tuple(int(v) for v in size.split("x")) for size in args.sizes):
                rgb = cv2.resize(getattr(skimage.data, name)(), (w, h), interpolation=cv2.INTER_CUBIC)
                image = torch.from_numpy(rgb).permute(2, 0, 1)[None].float().div_(255)
                row = {
                    "faces_found": int(find_faces(image, detector, 4)[2].sum()),
                    "finder_s": timed(lambda image=image: find_faces(image, detector, 4)),
                    "finder_min_face_48_s": timed(lambda image=image: find_faces(image, coarse, 4)),
                    "pass1_s": timed(lambda image=image: segment_letterboxed(
                        pipes["parse"].segmenter, image, pipes["parse"].model_size)),
                    "parse_faces_parse_s": timed(lambda image=image: pipes["parse"].parse(image)),
                    "parse_faces_mtcnn_s": timed(lambda image=image: pipes["mtcnn"].parse(image)),
                }
                row["finder_vs_pass1_cpu"] = round(row["finder_s"][1] / row["pass1_s"][1], 2)
                both = row["parse_faces_mtcnn_s"][1] / row["parse_faces_parse_s"][1]
                row["mtcnn_vs_parse_cpu"] = round(both, 2)
                result["photos"][f"{name} {w}x{h}"] = row
                print(name, w, h, row, flush=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
