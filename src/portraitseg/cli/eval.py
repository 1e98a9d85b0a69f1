"""``python eval.py ckpt_path=...`` / ``portraitseg-eval``: evaluate a trained segmenter.

The checkpoint (or weights export) is read with ``torch.load(weights_only=True)`` by
:func:`portraitseg.models.checkpoint.read_model_file`; the split is scored by
:meth:`SegmentationModule.test_step` at the dataset's native label resolution (letterbox padding
cropped, logits resized to each label's size) into one confusion matrix. Writes ``metrics.json``,
``confusion.png`` and ``predictions.png`` into the run directory and prints the table.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from portraitseg.cli import config_dir
from portraitseg.cli.checks import ConfigError, check_config, instantiate_checked
from portraitseg.io import InputError, atomic_write, write_figure, write_image

if TYPE_CHECKING:  # imported when an evaluation starts, so `eval.py --help` and config errors are quick
    import lightning as L
    import torch

    from portraitseg.data import HelenDataModule, HelenDataset
    from portraitseg.lit import SegmentationModule

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
log = logging.getLogger(__name__)

MISSING_CKPT = (
    "eval needs a model: python eval.py ckpt_path=<file>, where <file> is a checkpoint written by "
    "`python train.py` (outputs/<task>/runs/<time>/checkpoints/last.ckpt; train.py prints its "
    "path at the end), a weights file exported with `python -m portraitseg.models.checkpoint`, "
    "or `default` for the model bundled with the package"
)


class EvalConfigError(ConfigError):
    """The eval config cannot be run as given (the message names the key and the fix)."""


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple)):  # tensors, arrays
        value = value.tolist()
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def score_tables(scores: Mapping[str, float], class_names: Sequence[str], title: str = "") -> list:
    """``rich`` tables: per-class F1/IoU, then group F1s, overall F1, mIoU, accuracy, subject IoU."""
    from rich.table import Table

    fmt = lambda v: "-" if v is None or math.isnan(v) else f"{100 * v:.2f}"  # noqa: E731
    per_class = Table(title=title or None)
    per_class.add_column("class")
    per_class.add_column("F1 %", justify="right")
    per_class.add_column("IoU %", justify="right")
    for name in class_names:
        per_class.add_row(name, fmt(scores.get(f"f1/{name}")), fmt(scores.get(f"iou/{name}")))
    summary = Table()
    summary.add_column("score")
    summary.add_column("%", justify="right")
    for group in ("brows", "eyes", "nose", "mouth"):
        if f"f1_{group}" in scores:
            summary.add_row(f"F1 {group} (merged)", fmt(scores[f"f1_{group}"]))
    if "f1_overall" in scores:
        summary.add_row("[bold]overall F1[/] (brows+eyes+nose+mouth)",
                        f"[bold]{fmt(scores['f1_overall'])}[/]")
    summary.add_section()
    summary.add_row("mIoU", fmt(scores["miou"]))
    summary.add_row("pixel accuracy", fmt(scores["pixel_acc"]))
    summary.add_row("subject IoU (all non-background)", fmt(scores["subject_iou"]))
    return [per_class, summary]


def confusion_figure(cm: np.ndarray, class_names: Sequence[str], path: str | os.PathLike) -> None:
    """Save the row-normalized (per true class) confusion matrix ``(K, K)`` as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    k = len(class_names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.62 * k, 0.8 + 0.55 * k), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix, % of each true class")
    for i in range(k):
        for j in range(k):
            if norm[i, j] >= 0.005:
                ax.text(j, i, f"{100 * norm[i, j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    write_figure(path, fig)
    plt.close(fig)


def sample_predictions(module: SegmentationModule, dataset, n: int) -> np.ndarray:
    """(image | truth | prediction [| portrait]) rows for the first ``n`` samples, at the network
    input size; the portrait column is rendered with the ``render`` preset when one is set."""
    import torch

    with torch.no_grad():
        return _sample_predictions(module, dataset, n)


def _sample_predictions(module: SegmentationModule, dataset, n: int) -> np.ndarray:
    from portraitseg.data import collate
    from portraitseg.viz import prediction_grid

    batch = collate([dataset[i] for i in range(min(n, len(dataset)))])
    module.eval()
    from portraitseg.pipeline import render_parse

    image = batch["image"].to(module.device)
    logits, person = module.predict(image)
    portraits = None
    if module.renderer is not None:  # the pipeline's render step: person matte (if any) + kept classes
        person = None if person is None else person.sigmoid()
        subject = module.renderer.subject
        portraits, _ = render_parse(module.renderer, image, logits.softmax(1), person, subject)
        portraits = portraits.cpu()
    return prediction_grid(batch["image"], batch["mask"], logits.argmax(1).cpu(), portraits)


def _prepare(cfg: DictConfig) -> None:
    """Check ``cfg`` (a model given, known keys, render values in range); set up logging and the seed."""
    import lightning as L

    from portraitseg.cli.extras import log_each_line_once

    if not cfg.get("ckpt_path"):
        raise EvalConfigError(MISSING_CKPT)
    check_config(cfg)
    log_each_line_once()
    if cfg.get("render"):
        from portraitseg.cli.render import UsageError, check_render_options

        try:
            check_render_options(cfg.render, "render")
        except UsageError as err:
            raise EvalConfigError(str(err)) from None
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)


def _load_module(cfg: DictConfig) -> tuple[Path, dict[str, Any], int, SegmentationModule]:
    """The model file, its info, its number of classes and the module holding its weights."""
    from portraitseg.lit import SegmentationModule
    from portraitseg.models.checkpoint import load_weights, read_model_file, resolve_model_path

    path = resolve_model_path(cfg.ckpt_path)
    stored = read_model_file(path)
    info = stored.info
    classes = int(stored.config.get("classes", len(info["class_names"])))
    render = OmegaConf.to_container(cfg.render, resolve=True) if cfg.get("render") else None
    module = SegmentationModule(net=stored.config, render=render, tta_flip=bool(cfg.tta_flip),
                                num_log_images=0)
    load_weights(module.net, stored.state_dict, str(path))
    return path, info, classes, module


def _eval_data(cfg: DictConfig, classes: int, info: dict[str, Any]) -> tuple[HelenDataModule, HelenDataset]:
    """The data module and the dataset of ``cfg.split``, warning where they differ from training."""
    with open_dict(cfg):
        cfg.data.num_classes = classes
    if "root" in cfg.data and cfg.data.root is None:
        raise EvalConfigError("data.root is not set: pass data.root=/path/to/the/dataset")
    datamodule: HelenDataModule = instantiate_checked(cfg.data, "data")
    datamodule.setup("test")
    split = cfg.split
    if split not in datamodule.splits:
        raise EvalConfigError(
            f"split={split!r} not found in {datamodule.root}; it has {sorted(datamodule.splits)}"
        )
    if split == "test" and datamodule.splits.get("test") == datamodule.splits.get("val"):
        log.warning("%s has no test split: evaluating the val split carved from train "
                    "(data.val_fraction, data.split_seed)", datamodule.root)
    hp = datamodule.hparams
    if info.get("image_size") and info["image_size"] != hp.image_size:
        log.warning("the model was trained at image_size=%s but data.image_size=%s; pass "
                    "data.image_size=%s to evaluate as trained", info["image_size"],
                    hp.image_size, info["image_size"])
    return datamodule, datamodule.dataset(split, train=False, keep_original=True)


def _test_confusion(cfg: DictConfig, module: SegmentationModule, datamodule: HelenDataModule,
                    dataset: HelenDataset) -> tuple[L.Trainer, torch.Tensor]:
    """Test ``module`` on ``dataset`` with the configured trainer: the trainer and the (summed) confusion."""
    from torch.utils.data import DataLoader

    from portraitseg.data import collate

    hp = datamodule.hparams
    loader = DataLoader(dataset, batch_size=hp.eval_batch_size or hp.batch_size, shuffle=False,
                        num_workers=hp.num_workers, collate_fn=collate,
                        persistent_workers=False, pin_memory=hp.pin_memory)
    loggers = [instantiate(c) for c in (cfg.get("logger") or {}).values()
               if isinstance(c, DictConfig) and "_target_" in c]
    trainer: L.Trainer = instantiate_checked(cfg.trainer, "trainer", logger=loggers or False)
    trainer.test(module, dataloaders=loader, verbose=False)
    confusion = module.test_confusion
    if trainer.world_size > 1:
        confusion = trainer.strategy.reduce(confusion, reduce_op="sum")
    return trainer, confusion.cpu()


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Run the evaluation described by ``cfg`` (conf/eval.yaml); returns the metrics.json dict."""
    from portraitseg.lit import scores_from_confusion

    _prepare(cfg)
    path, info, classes, module = _load_module(cfg)
    datamodule, dataset = _eval_data(cfg, classes, info)
    trainer, confusion = _test_confusion(cfg, module, datamodule, dataset)
    scores = {k: float(v) for k, v in scores_from_confusion(confusion).items()}
    result = {
        "checkpoint": str(path),
        "model": info["model"],
        "checkpoint_metrics": info["metrics"],
        "data_root": str(datamodule.root),
        "split": cfg.split,
        "num_images": len(dataset),
        "image_size": datamodule.hparams.image_size,
        "tta_flip": bool(cfg.tta_flip),
        "resolution": "native label size (letterbox cropped, logits resized bilinearly)",
        "class_names": info["class_names"],
        "scores": scores,
        "confusion": confusion.tolist(),
    }
    if trainer.is_global_zero:
        _write_outputs(cfg, module, dataset, result)
    return result


def _write_outputs(cfg: DictConfig, module: SegmentationModule, dataset, result: dict) -> None:
    from rich.console import Console

    out = Path(cfg.paths.output_dir)
    atomic_write(out / "metrics.json", (json.dumps(_jsonable(result), indent=1) + "\n").encode("utf-8"))
    confusion_figure(np.asarray(result["confusion"]), result["class_names"], out / "confusion.png")
    if cfg.get("num_figures"):
        write_image(out / "predictions.png", sample_predictions(module, dataset, int(cfg.num_figures)))
    title = (f"{Path(result['checkpoint']).name} on {result['split']} "
             f"({result['num_images']} images{', flip TTA' if result['tta_flip'] else ''})")
    console = Console()
    for table in score_tables(result["scores"], result["class_names"], title):
        console.print(table)
    log.info("wrote %s, %s and %s", out / "metrics.json", out / "confusion.png",
             out / "predictions.png" if cfg.get("num_figures") else "no figure")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="eval")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns the overall F1 (mIoU for non-Helen class sets)."""
    from portraitseg.cli.extras import quiet_known_noise

    quiet_known_noise()
    try:
        scores = evaluate(cfg)["scores"]
    except (ConfigError, InputError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return scores.get("f1_overall", scores["miou"])


if __name__ == "__main__":
    main()
