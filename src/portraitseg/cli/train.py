"""``python train.py`` / ``portraitseg-train``: train a segmenter from the Hydra config tree."""

from __future__ import annotations

import logging
import os
from typing import Any

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import Callback
from omegaconf import DictConfig, OmegaConf

from portraitseg.cli import config_dir
from portraitseg.lit import SegmentationModule

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
log = logging.getLogger(__name__)


def _instantiate_all(section: DictConfig | None) -> list[Any]:
    """Instantiate every ``{name: {_target_: ...}}`` entry of a callbacks/logger section."""
    if not section:
        return []
    return [instantiate(c) for c in section.values() if isinstance(c, DictConfig) and "_target_" in c]


def build_module(cfg: DictConfig) -> SegmentationModule:
    """The LightningModule from the ``model``, ``optimizer``, ``scheduler``, ``loss`` nodes."""
    plain = lambda node: OmegaConf.to_container(node, resolve=True) if node else None  # noqa: E731
    return SegmentationModule(
        net=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")),
        loss=plain(cfg.get("loss")),
        **plain(cfg.get("module")) or {},
    )


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) as configured; returns the final metrics as floats."""
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    datamodule: L.LightningDataModule = instantiate(cfg.data)
    module = build_module(cfg)
    callbacks: list[Callback] = _instantiate_all(cfg.get("callbacks"))
    loggers = _instantiate_all(cfg.get("logger"))
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.get("test"):
        trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
        metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if trainer.is_global_zero:
        _report(cfg, trainer, metrics, best)
    return metrics


def _report(cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float], best: str) -> None:
    out = cfg.paths.output_dir
    shown = {k: v for k, v in metrics.items() if k.startswith(("val/f1_overall", "val/miou", "test/f1_overall"))}
    log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    log.info("run directory: %s", out)
    if best:
        log.info("best checkpoint: %s", best)
    last = getattr(trainer.checkpoint_callback, "last_model_path", "")
    if last:
        log.info("last checkpoint: %s", last)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point; returns ``cfg.optimized_metric`` for hyperparameter sweepers."""
    metrics = train(cfg)
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
