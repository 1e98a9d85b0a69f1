"""One CPU training step through Lightning vs a plain PyTorch loop, interleaved in one process.

Both paths train the same segmenter (``create_model("fcn", encoder)``, no pretrained weights) on
the same in-memory batches (``4 x 3 x 256 x 256`` + masks, one ``DataLoader``, no workers) with the
same optimizer (Adam), LR schedule (poly with warmup, stepped per batch), softmax cross-entropy and
gradient clipping (norm 1.0):

- ``lightning``: ``Trainer.fit(SegmentationModule, limit_train_batches=steps)`` with the module
  ``python train.py`` uses (its per-step ``self.log`` included), no logger/checkpoint/progress bar;
- ``plain``: ``for batch in loader: zero_grad, forward, loss, backward, clip, step, sched.step``.

A step's time is the interval between the ends of consecutive steps (fetching the batch, hooks
and the optimizer step included); the first ``--warmup`` intervals of each run are dropped.
Runs alternate (plain, lightning, lightning, plain, ...) so drifts in machine load hit both.
Peak RSS is sampled every 5 ms by a thread reading /proc/self/statm during each run (freed memory
is handed back to the OS with ``malloc_trim`` between runs), reported as the run's peak and as
its growth over the RSS just before it.

    python experiments/bench_train_step/bench.py                      # the recorded benchmark
    python experiments/bench_train_step/bench.py --size 64 --steps 4 --repeats 1 --models resnet18
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import platform
import statistics
import threading
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import lightning as L  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from portraitseg.data import collate  # noqa: E402
from portraitseg.lit import SegmentationModule  # noqa: E402
from portraitseg.lit.schedules import warmup_schedule  # noqa: E402
from portraitseg.models import create_model  # noqa: E402

HERE = Path(__file__).resolve().parent
OPTIMIZER = {"_target_": "torch.optim.Adam", "lr": 1e-3, "betas": [0.9, 0.999], "weight_decay": 0.0}
SCHEDULER = {"name": "poly", "warmup_steps": 2, "power": 0.9, "min_lr_ratio": 0.0}
CLIP = 1.0


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def release_memory() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


class PeakRss:
    """Context manager sampling the resident set size every ``interval`` seconds."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = self.start = 0
        self._stop = threading.Event()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval)

    def __enter__(self) -> PeakRss:
        self.start = self.peak = rss_bytes()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


def make_loader(steps: int, batch: int, size: int, classes: int = 11) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    samples = [{"image": torch.rand(3, size, size, generator=g),
                "mask": torch.randint(0, classes, (size, size), generator=g)}
               for _ in range(steps * batch)]
    return DataLoader(samples, batch_size=batch, shuffle=False, num_workers=0, collate_fn=collate)


def net_config(encoder: str) -> dict:
    return {"_target_": "portraitseg.models.create_model", "arch": "fcn", "encoder_name": encoder,
            "encoder_weights": None, "classes": 11}


def run_plain(encoder: str, loader: DataLoader) -> tuple[list[float], float]:
    torch.manual_seed(0)
    cfg = {k: v for k, v in net_config(encoder).items() if k != "_target_"}
    model = create_model(**cfg).train()
    opt_kwargs = {k: v for k, v in OPTIMIZER.items() if k != "_target_"}
    optimizer = torch.optim.Adam(model.parameters(), **opt_kwargs)
    scheduler = warmup_schedule(optimizer, len(loader), **SCHEDULER)
    ends = [time.perf_counter()]
    for batch in loader:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(batch["image"]), batch["mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
        optimizer.step()
        scheduler.step()
        ends.append(time.perf_counter())
    return [b - a for a, b in zip(ends, ends[1:], strict=False)], ends[-1] - ends[0]


class StepEnds(Callback):
    def __init__(self) -> None:
        self.ends: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.ends.append(time.perf_counter())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.ends.append(time.perf_counter())


def run_lightning(encoder: str, loader: DataLoader) -> tuple[list[float], float]:
    torch.manual_seed(0)
    module = SegmentationModule(net=net_config(encoder), optimizer=OPTIMIZER, scheduler=SCHEDULER,
                                loss={"class_weights": None, "label_smoothing": 0.0},
                                num_log_images=0)
    timer = StepEnds()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=len(loader),
        limit_val_batches=0, num_sanity_val_steps=0, gradient_clip_val=CLIP, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[timer],
    )
    trainer.fit(module, train_dataloaders=loader)
    ends = timer.ends
    return [b - a for a, b in zip(ends, ends[1:], strict=False)], ends[-1] - ends[0]


RUNNERS = {"plain": run_plain, "lightning": run_lightning}


def machine() -> dict:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "logical_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "lightning": L.__version__, "platform": platform.platform(),
            "load_avg_at_start": os.getloadavg()}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"],
                        help="FCN encoders (default: resnet18 resnet50)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12, help="steps per run")
    parser.add_argument("--warmup", type=int, default=2, help="first steps of a run not timed")
    parser.add_argument("--repeats", type=int, default=3, help="run pairs per model")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args(argv)
    if args.steps <= args.warmup:
        parser.error("--steps must exceed --warmup")
    if args.threads:
        torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)
    loader = make_loader(args.steps, args.batch, args.size)
    runs: dict[str, dict[str, list]] = {m: {p: [] for p in RUNNERS} for m in args.models}
    t_start = time.perf_counter()
    for r in range(args.repeats):
        for model in args.models:
            order = ("plain", "lightning") if r % 2 == 0 else ("lightning", "plain")
            for path in order:
                release_memory()
                with PeakRss() as mem:
                    steps, total = RUNNERS[path](model, loader)
                timed = steps[args.warmup:]
                runs[model][path].append({
                    "step_s": timed, "median_step_s": statistics.median(timed),
                    "loop_s": total, "peak_rss_mb": mem.peak / 2**20,
                    "rss_growth_mb": (mem.peak - mem.start) / 2**20,
                })
                print(f"repeat {r} fcn_{model:<9} {path:<9} median step "
                      f"{statistics.median(timed):.3f} s, peak RSS {mem.peak / 2**20:.0f} MB "
                      f"(+{(mem.peak - mem.start) / 2**20:.0f})", flush=True)
    summary = {}
    for model, paths in runs.items():
        row = {}
        for path, results in paths.items():
            all_steps = [s for res in results for s in res["step_s"]]
            median = statistics.median(all_steps)
            row[path] = {
                "median_step_s": median,
                "images_per_s": args.batch / median,
                "run_medians_s": [res["median_step_s"] for res in results],
                "peak_rss_mb": statistics.median(res["peak_rss_mb"] for res in results),
                "rss_growth_mb": statistics.median(res["rss_growth_mb"] for res in results),
            }
        row["lightning_overhead_pct"] = 100 * (row["lightning"]["median_step_s"]
                                               / row["plain"]["median_step_s"] - 1)
        summary[f"fcn_{model}"] = row
    result = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": machine(), "wall_s": time.perf_counter() - t_start,
              "summary": summary, "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"\n{args.batch}x3x{args.size}x{args.size}, {args.steps - args.warmup} timed steps x "
          f"{args.repeats} runs per path, torch threads {torch.get_num_threads()}")
    print("| model | path | median step (s) | images/s | peak RSS (MB) | RSS growth (MB) |")
    print("|---|---|---|---|---|---|")
    for name, row in summary.items():
        for path in RUNNERS:
            p = row[path]
            print(f"| {name} | {path} | {p['median_step_s']:.3f} | {p['images_per_s']:.2f} | "
                  f"{p['peak_rss_mb']:.0f} | {p['rss_growth_mb']:.0f} |")
        print(f"| {name} | Lightning overhead | {row['lightning_overhead_pct']:+.1f}% | | | |")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
