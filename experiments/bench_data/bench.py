"""Images/s of the HelenDataModule train pipeline vs the training step rate of fcn_resnet18.

Loader: ``HelenDataModule(...).train_dataloader()`` on the real HELEN* sample (``sample40.txt``:
40 images, decode + letterbox + augmentation + collate, batch 8, the ``data=helenstar`` augment
settings), iterated for ``--epochs`` epochs after one warm-up epoch (worker start-up excluded:
``persistent_workers=True`` as in training), for each image size and worker count. The loader
runs alone, no model: the rate is what it can supply.

Model: one training step (forward, cross-entropy, backward, Adam) of ``fcn`` + ``resnet18``
(random init) on in-memory batches of the same size, using all cores (``torch`` default threads),
median over ``--steps`` steps after 2 warm-up steps.

Also: milliseconds per image of each pipeline step (decode, each augmentation, tensor
conversion) in one process, to see what to speed up.

Goal: loader images/s with 2 workers >= 2 x the model's images/s at each size.

    python experiments/bench_data/bench.py                 # recorded: sizes 256 512, workers 0 1 2
    python experiments/bench_data/bench.py --sizes 64 --workers 0 --epochs 1 --steps 2   # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from portraitseg.data import HelenDataModule  # noqa: E402
from portraitseg.models import create_model  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_ROOT = HERE.parents[2] / "shared" / "data" / "helenstar"
#: conf/data/helen.yaml augment settings (data=helenstar inherits them)
AUGMENT = {"scale": [0.75, 1.25], "rotate": 15.0, "shift": 0.1, "color": 0.2, "flip": 0.5}


def loader_rate(root: Path, size: int, workers: int, batch: int, epochs: int) -> dict:
    dm = HelenDataModule(root, layout="helenstar", image_size=size, batch_size=batch,
                         num_workers=workers, persistent_workers=True, train_list="sample40.txt",
                         val_fraction=0.1, augment=AUGMENT)
    dm.setup("fit")
    loader = dm.train_dataloader()
    for _ in loader:  # warm-up epoch: starts the workers, fills the page cache
        pass
    images, t0 = 0, time.perf_counter()
    for _ in range(epochs):
        for item in loader:
            images += len(item["image"])
    seconds = time.perf_counter() - t0
    return {"size": size, "workers": workers, "images": images, "seconds": seconds,
            "images_per_s": images / seconds}


def stage_profile(root: Path, size: int) -> dict:
    """Milliseconds per image of each step of one sample, in this process (one pass, 40 images)."""
    from portraitseg.data.dataset import load_sample, to_tensors
    from portraitseg.data.layouts import read_pair_list
    from portraitseg.data.transforms import train_transform

    samples = read_pair_list(root / "sample40.txt", root)
    transform = train_transform(size, **AUGMENT)
    transform.set_random_seed(0)
    ms: dict[str, float] = {}
    for sample in samples:
        t0 = time.perf_counter()
        image, label = load_sample(sample)
        ms["decode"] = ms.get("decode", 0.0) + time.perf_counter() - t0
        data = {"image": image, "mask": label}
        for step in transform.transforms:
            t0 = time.perf_counter()
            data = step(**data)
            name = type(step).__name__
            ms[name] = ms.get(name, 0.0) + time.perf_counter() - t0
        t0 = time.perf_counter()
        to_tensors(data["image"], data["mask"])
        ms["to_tensors"] = ms.get("to_tensors", 0.0) + time.perf_counter() - t0
    return {"size": size, **{k: 1e3 * v / len(samples) for k, v in ms.items()}}


def model_rate(size: int, batch: int, steps: int) -> dict:
    torch.manual_seed(0)
    model = create_model("fcn", "resnet18", None, 11).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    image = torch.rand(batch, 3, size, size)
    mask = torch.randint(0, 11, (batch, size, size))
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(image), mask)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    step = statistics.median(times)
    return {"size": size, "batch": batch, "median_step_s": step, "images_per_s": batch / step,
            "threads": torch.get_num_threads()}


def machine() -> dict:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    names = [x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")]
    cpu = names[0] if names else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__,
            "python": platform.python_version(), "load_avg_before": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs of the 40-image sample")
    parser.add_argument("--steps", type=int, default=8, help="timed model steps")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()
    if not (args.root / "sample40.txt").is_file():
        raise SystemExit(f"{args.root}/sample40.txt not found: pass --root <HELEN* root>")

    result = {"machine": machine(), "args": {k: str(v) for k, v in vars(args).items()},
              "loader": [], "model": [], "stages_ms_per_image": []}
    for size in args.sizes:
        result["stages_ms_per_image"].append(stage_profile(args.root, size))
        result["model"].append(model_rate(size, args.batch, args.steps))
        for workers in args.workers:
            result["loader"].append(loader_rate(args.root, size, workers, args.batch, args.epochs))
    args.out.write_text(json.dumps(result, indent=1))

    print(f"machine: {result['machine']}")
    print("| size | model img/s (fcn_resnet18 step) | loader img/s, workers " +
          " / ".join(map(str, args.workers)) + " | loader(max workers) / model |")
    print("|---|---|---|---|")
    for m in result["model"]:
        rates = [r["images_per_s"] for r in result["loader"] if r["size"] == m["size"]]
        print(f"| {m['size']} | {m['images_per_s']:.1f} | " + " / ".join(f"{r:.1f}" for r in rates)
              + f" | {rates[-1] / m['images_per_s']:.1f}x |")
    for prof in result["stages_ms_per_image"]:
        print(f"ms/image at {prof['size']} (one process): "
              + ", ".join(f"{k} {v:.2f}" for k, v in prof.items() if k != "size"))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
