"""``python train.py`` / ``portraitseg-train``: train a segmenter from the Hydra config tree."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from portraitseg.cli import config_dir
from portraitseg.cli.checks import ConfigError, check_config, instantiate_checked
from portraitseg.cli.ddp import (  # noqa: F401 - ddp_child_args, hydra_quote: importable from here too
    ddp_child_args,
    ddp_job,
    hydra_quote,
    launch_args,
)
from portraitseg.cli.extras import ExtrasError, apply_extras, log_each_line_once
from portraitseg.data.layouts import DatasetNotFoundError
from portraitseg.io import InputError, atomic_write

if TYPE_CHECKING:  # imported when a run starts, so `train.py --help` and config errors are quick
    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from portraitseg.lit import SegmentationModule

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
log = logging.getLogger(__name__)


class RunConfigError(ConfigError):
    """A run cannot start as configured (bad ``init_from`` or ``ckpt_path``, missing extra); exit status 2."""


#: optional packages a config group needs, and the extra that installs them
_EXTRAS = {"tensorboard": "tensorboard", "tensorboardX": "tensorboard", "onnx": "export",
           "onnxruntime": "export", "optuna": "sweep", "wandb": "wandb"}


def _instantiate_all(section: DictConfig | None, group: str) -> list[Any]:
    """Instantiate every ``{name: {_target_: ...}}`` entry of a callbacks/logger section.

    A missing optional package (``logger=tensorboard`` without tensorboard) is a
    :class:`RunConfigError` naming the entry and the extra that installs it; a value the
    constructor refuses (``callbacks.early_stopping.mode=up``) a :class:`ConfigError` naming it.
    """
    if not section:
        return []
    built = []
    for name, node in section.items():
        if not (isinstance(node, DictConfig) and "_target_" in node):
            continue
        try:
            built.append(instantiate_checked(node, f"{group}.{name}"))
        except Exception as err:  # noqa: BLE001 - hydra wraps the constructor's error
            missing = _missing_module(err)
            if missing is None:
                raise
            extra = _EXTRAS.get(missing.split(".")[0])
            how = f"pip install 'portraitseg[{extra}]'" if extra else f"pip install {missing}"
            raise RunConfigError(f"{group}.{name} ({node._target_}) needs the package {missing!r}, "
                                 f"which is not installed: {how}, or choose another {group}") from None
    return built


def _missing_module(err: BaseException | None) -> str | None:
    """The package a ModuleNotFoundError anywhere in ``err``'s cause chain names (else None);
    Lightning's loggers raise it without ``name``, naming the package in the message."""
    while err is not None:
        if isinstance(err, ModuleNotFoundError):
            if err.name:
                return err.name
            found = [m for m in _EXTRAS if re.search(rf"`{m}`|\b{m}\b", str(err))]
            return found[0] if found else str(err)
        err = err.__cause__ or err.__context__
    return None


def build_module(cfg: DictConfig) -> SegmentationModule:
    """The LightningModule from the ``model``, ``optimizer``, ``scheduler``, ``loss``, ``render`` nodes."""
    from portraitseg.lit import SegmentationModule

    plain = lambda node: OmegaConf.to_container(node, resolve=True) if node else None  # noqa: E731
    return SegmentationModule(
        net=plain(cfg.model),
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.get("scheduler")),
        loss=plain(cfg.get("loss")),
        render=plain(cfg.get("render")),
        **plain(cfg.get("module")) or {},
    )


def init_weights(module: SegmentationModule, path: str) -> None:
    """Fine-tuning: load the network weights of a checkpoint or weights export into ``module``.

    Unlike ``ckpt_path`` (resume), the optimizer, LR schedule, epoch and step start fresh.
    The stored model must have the configured architecture and class count.
    """
    from portraitseg.io import InputError
    from portraitseg.models.checkpoint import load_segmenter

    try:
        source, info = load_segmenter(path)
    except (FileNotFoundError, InputError) as err:  # CheckpointError is an InputError
        raise RunConfigError(f"init_from={path}: {err}") from None
    try:
        module.net.load_state_dict(source.state_dict())
    except RuntimeError as err:
        raise RunConfigError(
            f"init_from={path}: its model ({info.get('model')}) does not match the configured "
            f"model; pick the same model=... as the run that wrote it. {err}"
        ) from None
    log.info("initialized the network from %s", path)


def resume_checkpoint(module: SegmentationModule, ckpt_path: str | None, task_dir: str) -> str | None:
    """The checkpoint to resume from (``ckpt_path``: null, ``last`` or a file; see
    :func:`~portraitseg.lit.callbacks.resolve_ckpt_path`), refused by name when it is missing,
    unreadable, a weights export, or holds another network than the configured one (before
    Lightning fails inside ``load_state_dict``)."""
    from portraitseg.lit.callbacks import resolve_ckpt_path
    from portraitseg.models.checkpoint import read_model_file

    try:
        path = resolve_ckpt_path(ckpt_path, task_dir)
    except InputError as err:  # CheckpointError
        text = str(err)  # (the errors about ckpt_path=last name it already)
        raise RunConfigError(text if text.startswith("ckpt_path=") else f"ckpt_path={ckpt_path}: {text}") \
            from None
    if path is None:
        return None
    try:
        stored = read_model_file(path)
    except (FileNotFoundError, InputError) as err:  # CheckpointError is an InputError
        raise RunConfigError(f"ckpt_path={path}: {err}") from None
    if stored.info.get("kind") != "lightning":
        raise RunConfigError(f"ckpt_path={path}: a weights export has no optimizer or epoch to resume "
                             f"from; fine-tune from it with init_from={path} (and ckpt_path=null)")
    wanted = {k: tuple(v.shape) for k, v in module.net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in stored.state_dict.items()}
    if wanted != found:
        model = stored.info.get("model") or {}
        summary = ", ".join(f"{k}={model[k]}" for k in ("arch", "encoder_name", "classes", "person_head")
                            if k in model)
        raise RunConfigError(
            f"ckpt_path={path}: it holds another model ({summary}) than the one configured; resume "
            "with the model=... (and model.* overrides) of the run that wrote it, or start fresh "
            "with ckpt_path=null (init_from= loads weights of the same model only)")
    return path


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit (and optionally test) as configured; returns the final metrics as floats."""
    check_config(cfg)  # before the heavy imports: a bad value is named at once
    import lightning as L
    import torch
    from lightning.pytorch.callbacks import LearningRateMonitor, ProgressBar

    log_each_line_once()
    if cfg.get("render"):  # the preset of the validation grids: the CLI's rules
        from portraitseg.cli.render import UsageError, check_render_options

        try:
            check_render_options(cfg.render, "render")
        except UsageError as err:
            raise RunConfigError(str(err)) from None
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if cfg.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    if "root" in cfg.data and cfg.data.root is None:
        choice = HydraConfig.get().runtime.choices.get("data") if HydraConfig.initialized() else None
        raise RunConfigError(f"data.root is not set{f' for data={choice}' if choice else ''}: "
                             "pass data.root=/path/to/the/dataset")
    datamodule: L.LightningDataModule = instantiate_checked(cfg.data, "data")
    module = build_module(cfg)
    if cfg.get("init_from"):
        init_weights(module, cfg.init_from)
    resume = None
    if cfg.get("train", True):
        resume = resume_checkpoint(module, cfg.get("ckpt_path"), f"{cfg.paths.log_dir}/{cfg.task_name}")
    callbacks: list[Callback] = _instantiate_all(cfg.get("callbacks"), "callbacks")
    loggers = _instantiate_all(cfg.get("logger"), "logger")
    if not loggers:  # LearningRateMonitor refuses to run without a logger (e.g. debug=fdr)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.trainer.get("enable_progress_bar") is False:  # and Lightning refuses a bar callback then
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    if cfg.trainer.get("enable_model_summary") and cfg.data.get("image_size"):
        # one training-size image: the summary reports the model's FLOPs and sizes, not "0"
        module.example_input_array = torch.zeros(1, 3, cfg.data.image_size, cfg.data.image_size)
    trainer: L.Trainer = instantiate_checked(cfg.trainer, "trainer", callbacks=callbacks,
                                             logger=loggers or False)
    for logger in loggers:
        logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    with ddp_job(trainer):
        if cfg.get("train", True):
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        callback = trainer.checkpoint_callback
        best = callback.best_model_path if callback else ""
        if callback is not None and callback.best_model_score is not None:
            # sweeps optimise the score of the checkpoint that is kept, not the last epoch's
            metrics[f"best/{callback.monitor}"] = float(callback.best_model_score)
        if cfg.get("test"):
            trainer.test(module, datamodule=datamodule, ckpt_path=best or None)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items()})
    if trainer.is_global_zero:
        _report(cfg, trainer, metrics, best)
    return metrics


def _report(cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float], best: str) -> None:
    out = cfg.paths.output_dir
    headline = ("val/f1_overall", "val/miou", "test/f1_overall", "best/")
    shown = {k: v for k, v in metrics.items() if k.startswith(headline)}
    log.info("metrics: %s", ", ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items())))
    log.info("run directory: %s", out)
    if best:
        log.info("best checkpoint: %s", best)
    last = getattr(trainer.checkpoint_callback, "last_model_path", "")
    if last:
        log.info("last checkpoint: %s", last)
    _write_metrics_json(Path(out) / "metrics.json", cfg, trainer, metrics, best, last)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _write_metrics_json(
    path: Path, cfg: DictConfig, trainer: L.Trainer, metrics: dict[str, float], best: str, last: str
) -> None:
    """The run's final metrics, read by ``python -m portraitseg.sweep summarize`` (rank 0 only).

    ``metrics`` holds the last logged value of every metric; ``best_score`` is the checkpoint
    callback's best ``monitor`` value (``None`` without checkpointing). NaN becomes ``null``.
    """
    ckpt = trainer.checkpoint_callback
    best_score = getattr(ckpt, "best_model_score", None) if ckpt else None
    payload = {
        "tags": list(cfg.get("tags") or []),
        "monitor": getattr(ckpt, "monitor", None) or cfg.get("optimized_metric"),
        "best_score": _finite(float(best_score)) if best_score is not None else None,
        "best_checkpoint": best or None,
        "last_checkpoint": last or None,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "world_size": trainer.world_size,
        "metrics": {k: _finite(v) for k, v in sorted(metrics.items())},
    }
    atomic_write(path, (json.dumps(payload, indent=1) + "\n").encode("utf-8"))


#: errors that are about the user's input and name it: reported in one line, exit status 2
USER_ERRORS = (ConfigError, ExtrasError, InputError, DatasetNotFoundError)


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def hydra_main(cfg: DictConfig) -> float | None:
    """Hydra task function; returns the best ``cfg.optimized_metric`` (that of the kept
    checkpoint) for hyperparameter sweepers."""
    try:
        apply_extras(cfg)
        metrics = train(cfg)
    except USER_ERRORS as err:
        # bad input named by the error itself: one line, no traceback (Hydra would print one)
        hint = ""
        if (isinstance(err, DatasetNotFoundError) and cfg.get("data") and "root" in cfg.data
                and not str(err).startswith("data.")):  # (an error naming its data key needs no hint)
            hint = f" (data.root={cfg.data.root}: pass data.root=/path/to/the/dataset)"
        print(f"error: {err}{hint}", file=sys.stderr)
        sys.exit(2)
    name = cfg.get("optimized_metric")
    if not name:
        return None
    return metrics.get(f"best/{name}", metrics.get(name))


def main() -> None:
    """``python train.py [overrides]``: :func:`hydra_main`, with DDP ranks sharing one run."""
    sys.argv[1:] = launch_args(sys.argv[1:], os.environ, os.getppid())
    hydra_main()


if __name__ == "__main__":
    main()
