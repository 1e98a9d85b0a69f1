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

from portraitseg.classes import NUM_CLASSES, flip_logits
from portraitseg.io import write_image
from portraitseg.lit.losses import lovasz_softmax, parse_loss, person_loss
from portraitseg.lit.metrics import HelenMetrics, PersonMetrics
from portraitseg.lit.schedules import warmup_schedule
from portraitseg.pipeline import render_parse
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
    """Softmax cross-entropy training of a segmenter (and its person head), with Helen metrics.

    Batches hold ``image``, ``mask`` (class ids; 255 = unknown, skipped) and optionally ``person``
    (``(B, 1, H, W)`` soft matte, negative = unknown) and ``source`` (names of the data source:
    validation metrics are then logged per source as ``val/<source>/<metric>`` with their mean
    headline ``val/score``; see :class:`portraitseg.data.mixed.MixedDataModule`).

    Every argument is a plain config mapping (so checkpoints are self-describing and load with
    ``weights_only=True``):

    Args:
        net: the model config, ``{"_target_": "portraitseg.models.create_model", "arch": ...}``.
        optimizer: ``{"_target_": "torch.optim.Adam", "lr": ..., ...}`` (instantiated with params).
        scheduler: keyword arguments of :func:`portraitseg.lit.schedules.warmup_schedule`
            (without optimizer/total_steps), or ``None`` for a constant LR.
        loss: ``{"class_weights": list | None, "label_smoothing": float, "ohem": float | None,
            "lovasz_weight": float, "person_weight": float, "person_iou_weight": float,
            "render_weight": float}``; ``ohem`` averages the parse CE over the hardest share of
            pixels only; ``lovasz_weight > 0`` adds a Lovasz-softmax term
            (:func:`portraitseg.lit.losses.lovasz_softmax`) with that weight; the person head
            (when the model has one) is trained with ``person_weight`` times BCE +
            ``person_iou_weight`` soft IoU (:func:`portraitseg.lit.losses.person_loss`);
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
        self.ohem = None if loss.get("ohem") is None else float(loss["ohem"])
        self.lovasz_weight = float(loss.get("lovasz_weight", 0.0))
        self.person_weight = float(loss.get("person_weight", 1.0))
        self.person_iou_weight = float(loss.get("person_iou_weight", 1.0))
        self.has_person = bool(getattr(self.net, "person_head", False))
        self.render_weight = float(loss.get("render_weight", 0.0))
        self.renderer = self._build_renderer(render, num_classes)
        if self.render_weight and self.renderer is None:
            raise ValueError("loss.render_weight > 0 needs a render config (e.g. render=disc)")
        self.val_metrics = HelenMetrics(num_classes)
        self.test_metrics = HelenMetrics(num_classes)
        #: per-source validation metrics of mixed data: {source: (HelenMetrics, PersonMetrics)}
        self._source_metrics: dict[str, tuple[HelenMetrics, PersonMetrics]] = {}
        self._val_batches: dict[str, dict] = {}
        self._val_scores: dict[str, float] = {}

    @staticmethod
    def _build_renderer(render: Mapping[str, Any] | None, num_classes: int) -> Any:
        if not render:
            return None
        render = dict(render)
        if render.get("keep") is None and num_classes != NUM_CLASSES:
            render["keep"] = list(range(1, num_classes))  # every non-background class
        from portraitseg.presets import build_renderer

        return build_renderer(render, "render")

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Image ``(B, 3, H, W)`` in [0, 1] -> logits ``(B, K, H, W)``."""
        return self.net(image)

    def segment(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(class logits (B, K, H, W), person logit (B, 1, H, W) or None)``."""
        return self.net.segment(image) if hasattr(self.net, "segment") else (self.net(image), None)

    def predict(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`segment`, flip-averaged (left/right classes swapped) when ``tta_flip`` is set."""
        logits, person = self.segment(image)
        if self.hparams.tta_flip:
            m_logits, m_person = self.segment(image.flip(-1))
            logits = 0.5 * (logits + (flip_logits(m_logits) if self.num_classes == NUM_CLASSES
                                      else m_logits.flip(-1)))
            if person is not None:
                person = 0.5 * (person + m_person.flip(-1))
        return logits, person

    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, K, H, W)``, flip-averaged when ``tta_flip`` is set."""
        return self.predict(image)[0]

    def loss(self, logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Parse cross-entropy over the known pixels (:func:`portraitseg.lit.losses.parse_loss`),
        plus ``lovasz_weight`` times :func:`portraitseg.lit.losses.lovasz_softmax` when it is > 0."""
        loss = parse_loss(logits, mask, self.class_weights, self.label_smoothing, self.ohem)
        if self.lovasz_weight:
            loss = loss + self.lovasz_weight * lovasz_softmax(logits, mask)
        return loss

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits, person = self.segment(batch["image"])
        loss = self.loss(logits, batch["mask"])
        if person is not None and "person" in batch:
            term = person_loss(person, batch["person"], self.person_iou_weight)
            self.log("train/person_loss", term, on_step=True, on_epoch=True, batch_size=len(logits),
                     sync_dist=True)
            self.log("train/parse_loss", loss, on_step=True, on_epoch=True, batch_size=len(logits),
                     sync_dist=True)
            loss = loss + self.person_weight * term
        if self.render_weight:
            term = render_loss(batch["image"], logits.softmax(1), batch["mask"], self.renderer)
            self.log("train/render_loss", term, on_step=True, on_epoch=True, batch_size=len(logits))
            loss = loss + self.render_weight * term
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True,
                 batch_size=len(logits), sync_dist=True)
        return loss

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        logits, person = self.predict(batch["image"])
        source = batch["source"][0] if "source" in batch else ""
        prefix = f"val/{source}/" if source else "val/"
        mask = batch["mask"]
        preds = logits.argmax(1)
        known = bool((mask != 255).any())
        has_parse = bool(torch.as_tensor(batch.get("has_parse", True)).any())
        if known:
            self.log(f"{prefix}loss", self.loss(logits, mask), prog_bar=not source, sync_dist=True,
                     batch_size=len(logits), add_dataloader_idx=False)
        if source:
            parse_metrics, person_metrics = self._metrics_of(source)
            if known and has_parse:  # a person-only source has no Helen score
                parse_metrics.update(preds, mask)
            if person is not None and "person" in batch:
                person_metrics.update(person.sigmoid(), batch["person"])
        else:
            self.val_metrics.update(preds, mask)
        if batch_idx == 0 and self.hparams.num_log_images and source not in self._val_batches:
            n = self.hparams.num_log_images
            self._val_batches[source] = {
                "image": batch["image"][:n], "mask": mask[:n], "pred": preds[:n],
                "probs": logits[:n].softmax(1),
                "person": None if person is None else person[:n].sigmoid(),
            }

    def _metrics_of(self, source: str) -> tuple[HelenMetrics, PersonMetrics]:
        if source not in self._source_metrics:
            self._source_metrics[source] = (HelenMetrics(self.num_classes).to(self.device),
                                            PersonMetrics().to(self.device))
        return self._source_metrics[source]

    def on_validation_epoch_end(self) -> None:
        if self._source_metrics:
            self._log_sources()
        else:
            scores = self.val_metrics.compute()
            self.val_metrics.reset()
            self._val_scores = {k: float(v) for k, v in scores.items()}
            headline = "f1_overall" if "f1_overall" in scores else "miou"
            # scores come from a confusion matrix already summed over ranks: identical everywhere
            self.log_dict({f"val/{k}": v.float() for k, v in scores.items() if k != headline},
                          sync_dist=True)
            self.log(f"val/{headline}", scores[headline].float(), prog_bar=True, sync_dist=True)
        if self._val_batches and not self.trainer.sanity_checking:
            self._log_grid()
        self._val_batches = {}

    def _log_sources(self) -> None:
        """Per-source scores ``val/<source>/<metric>`` and their mean headline ``val/score``
        (each parse source's ``f1_overall`` (or ``miou``) and each person source's ``person_iou``)."""
        logged: dict[str, torch.Tensor] = {}
        headlines = []
        for source, (parse_metrics, person_metrics) in self._source_metrics.items():
            if int(parse_metrics.confusion.sum()) > 0:
                scores = parse_metrics.compute()
                logged.update({f"val/{source}/{k}": v.float() for k, v in scores.items()})
                headlines.append(scores["f1_overall" if "f1_overall" in scores else "miou"].float())
            if float(person_metrics.count) > 0:
                scores = person_metrics.compute()
                logged.update({f"val/{source}/{k}": v.float() for k, v in scores.items()})
                headlines.append(scores["person_iou"].float())
            parse_metrics.reset()
            person_metrics.reset()
        if headlines:
            logged["val/score"] = torch.stack(headlines).mean()
        self._val_scores = {k.removeprefix("val/"): float(v) for k, v in logged.items()}
        self.log_dict({k: v for k, v in logged.items() if k != "val/score"}, sync_dist=True)
        if "val/score" in logged:
            self.log("val/score", logged["val/score"], prog_bar=True, sync_dist=True)

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
        batches = list(self._val_batches.values())
        per = max(1, self.hparams.num_log_images // len(batches))
        batch = {k: None if batches[0][k] is None else torch.cat([b[k][:per] for b in batches])
                 for k in batches[0]}
        portraits = None
        if self.renderer is not None:  # the pipeline's render step (person matte + kept classes)
            portraits, _ = render_parse(self.renderer, batch["image"], batch["probs"], batch["person"],
                                        self.renderer.subject)
        grid = prediction_grid(batch["image"], batch["mask"], batch["pred"], portraits, batch["person"])
        write_image(Path(log_dir) / "images" / f"val_epoch{self.current_epoch:03d}.png", grid)
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
