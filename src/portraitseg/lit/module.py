"""SegmentationModule: the LightningModule that trains and evaluates any registered segmenter."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image

from portraitseg.classes import NUM_CLASSES, flip_logits
from portraitseg.lit.metrics import HelenMetrics
from portraitseg.lit.schedules import warmup_schedule
from portraitseg.render import render_loss
from portraitseg.viz import prediction_grid

log = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """OmegaConf containers (at any depth of dicts/lists) -> plain dicts and lists."""
    from omegaconf import Container, OmegaConf

    if isinstance(value, Container):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return value


class SegmentationModule(L.LightningModule):
    """Softmax cross-entropy training of a segmenter, with Helen metrics.

    Every argument is a plain config mapping (so checkpoints are self-describing and load with
    ``weights_only=True``):

    Args:
        net: the model config, ``{"_target_": "portraitseg.models.create_model", "arch": ...}``.
        optimizer: ``{"_target_": "torch.optim.Adam", "lr": ..., ...}`` (instantiated with params).
        scheduler: keyword arguments of :func:`portraitseg.lit.schedules.warmup_schedule`
            (without optimizer/total_steps), or ``None`` for a constant LR.
        loss: ``{"class_weights": list | None, "label_smoothing": float, "render_weight": float}``;
            ``render_weight > 0`` adds the render loss (:func:`portraitseg.render.render_loss`: L1
            between the portrait rendered from the predicted probabilities and the one rendered
            from the ground truth) with that weight. Off (0) by default.
        render: a ``conf/render`` preset (``PortraitRenderer`` config) used by the render loss and
            to draw a portrait column into the validation image grid; ``None`` disables both.
        num_log_images: validation images drawn into the per-epoch prediction grid (0: none).
        tta_flip: average logits with those of the mirrored image (left/right classes swapped)
            in validation/test/predict.
    """

    def __init__(
        self,
        net: Mapping[str, Any],
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        loss: Mapping[str, Any] | None = None,
        render: Mapping[str, Any] | None = None,
        num_log_images: int = 4,
        tta_flip: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = instantiate(dict(net))
        num_classes = int(net.get("classes", NUM_CLASSES))
        self.num_classes = num_classes
        loss = dict(loss or {})
        weights = loss.get("class_weights")
        if weights is not None and len(weights) != num_classes:
            raise ValueError(f"loss.class_weights has {len(weights)} entries for {num_classes} classes")
        self.register_buffer(
            "class_weights", torch.tensor(weights, dtype=torch.float32) if weights else None,
            persistent=False,
        )
        self.label_smoothing = float(loss.get("label_smoothing", 0.0))
        self.render_weight = float(loss.get("render_weight", 0.0))
        self.renderer = self._build_renderer(render, num_classes)
        if self.render_weight and self.renderer is None:
            raise ValueError("loss.render_weight > 0 needs a render config (e.g. render=disc)")
        self.val_metrics = HelenMetrics(num_classes)
        self.test_metrics = HelenMetrics(num_classes)
        self._val_batch: dict | None = None
        self._val_scores: dict[str, float] = {}

    @staticmethod
    def _build_renderer(render: Mapping[str, Any] | None, num_classes: int) -> Any:
        if not render:
            return None
        render = dict(render)
        if render.get("keep") is None and num_classes != NUM_CLASSES:
            render["keep"] = list(range(1, num_classes))  # every non-background class
        return instantiate(render)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, K, H, W)``."""
        return self.net(image)

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)``, flip-averaged when ``tta_flip`` is set."""
        logits = self(image)
        if self.hparams.tta_flip:
            mirrored = self(image.flip(-1))
            logits = 0.5 * (logits + (flip_logits(mirrored) if self.num_classes == NUM_CLASSES
                                      else mirrored.flip(-1)))
        return logits

    def loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits, mask, weight=self.class_weights, label_smoothing=self.label_smoothing
        )

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self(batch["image"])
        loss = self.loss(logits, batch["mask"])
        if self.render_weight:
            term = render_loss(batch["image"], logits.softmax(1), batch["mask"], self.renderer)
            self.log("train/render_loss", term, on_step=True, on_epoch=True, batch_size=len(logits))
            loss = loss + self.render_weight * term
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(logits), sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        logits = self.predict_logits(batch["image"])
        self.log("val/loss", self.loss(logits, batch["mask"]), prog_bar=True, sync_dist=True,
                 batch_size=len(logits))
        preds = logits.argmax(1)
        self.val_metrics.update(preds, batch["mask"])
        if batch_idx == 0 and self.hparams.num_log_images:
            n = self.hparams.num_log_images
            self._val_batch = {"image": batch["image"][:n], "mask": batch["mask"][:n],
                               "pred": preds[:n], "probs": logits[:n].softmax(1)}

    def on_validation_epoch_end(self) -> None:
        scores = self.val_metrics.compute()
        self.val_metrics.reset()
        self._val_scores = {k: float(v) for k, v in scores.items()}
        headline = "f1_overall" if "f1_overall" in scores else "miou"
        # scores come from a confusion matrix already summed over ranks: identical everywhere
        self.log_dict({f"val/{k}": v.float() for k, v in scores.items() if k != headline},
                      sync_dist=True)
        self.log(f"val/{headline}", scores[headline].float(), prog_bar=True, sync_dist=True)
        if self._val_batch is not None and not self.trainer.sanity_checking:
            self._log_grid()
        self._val_batch = None

    def test_step(self, batch: dict, batch_idx: int) -> None:
        """Evaluate at the dataset's native label size: crop padding, resize logits back."""
        logits = self.predict_logits(batch["image"])
        for i in range(len(logits)):
            h, w = (int(v) for v in batch["valid_size"][i])
            target = batch["orig_mask"][i]
            native = F.interpolate(
                logits[i : i + 1, :, :h, :w], size=tuple(target.shape), mode="bilinear",
                align_corners=False,
            )
            self.test_metrics.update(native.argmax(1), target[None])

    def on_test_epoch_end(self) -> None:
        scores = self.test_metrics.compute()
        self.log_dict({f"test/{k}": v.float() for k, v in scores.items()})
        self.test_confusion = self.test_metrics.confusion.clone()
        self.test_metrics.reset()

    def _log_grid(self) -> None:
        log_dir = self.trainer.log_dir or self.trainer.default_root_dir  # a broadcast: all ranks
        if not self.trainer.is_global_zero:
            return
        batch = self._val_batch
        portraits = None
        if self.renderer is not None:
            portraits, _ = self.renderer(batch["image"], probs=batch["probs"])
        grid = prediction_grid(batch["image"], batch["mask"], batch["pred"], portraits)
        out = Path(log_dir) / "images"
        out.mkdir(parents=True, exist_ok=True)
        Image.fromarray(grid).save(out / f"val_epoch{self.current_epoch:03d}.png")
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if hasattr(experiment, "add_image"):  # TensorBoard
                experiment.add_image("val/predictions", grid, self.global_step, dataformats="HWC")
            elif hasattr(logger, "log_image"):  # wandb
                logger.log_image("val/predictions", [grid], step=self.global_step)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Keep checkpoints loadable with ``torch.load(weights_only=True)`` and self-describing.

        OmegaConf containers (a Hydra-instantiated datamodule's hyperparameters) become plain
        dicts/lists, and the last validation scores are stored under ``portraitseg.val_metrics``.
        """
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = _plain(checkpoint[key])
        checkpoint["portraitseg"] = {"val_metrics": dict(self._val_scores)}

    def configure_optimizers(self) -> dict:
        opt_cfg = dict(self.hparams.optimizer or {"_target_": "torch.optim.Adam", "lr": 1e-3})
        optimizer = instantiate(opt_cfg, params=self.parameters())
        if not self.hparams.scheduler:
            return {"optimizer": optimizer}
        scheduler = warmup_schedule(
            optimizer, self.trainer.estimated_stepping_batches, **dict(self.hparams.scheduler)
        )
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
