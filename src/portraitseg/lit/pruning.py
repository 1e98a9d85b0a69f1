"""Optuna pruning from inside a Hydra job: :class:`OptunaPruning`, the Lightning callback behind
``callbacks.optuna_pruning.enabled=true`` of ``hparams_search=optuna``."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from portraitseg.sweep import DEFAULT_METRIC

log = logging.getLogger(__name__)


def find_trial(study: Any, overrides: Sequence[str]) -> Any | None:
    """The running trial of ``study`` whose parameters this job's ``overrides`` carry.

    hydra-optuna-sweeper launches each trial as a job whose overrides include
    ``f"{name}={value}"`` for every parameter of the trial; the newest running trial whose
    parameters all appear among ``overrides`` is this job's. Returns a
    :class:`optuna.trial.FrozenTrial` or ``None``.
    """
    from optuna.trial import TrialState

    given = set(overrides)
    matches = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
               if t.params and all(f"{k}={v}" in given for k, v in t.params.items())]
    return max(matches, key=lambda t: t.number) if matches else None


class OptunaPruning(Callback):
    """Report ``monitor`` to this job's Optuna trial after each validation; stop it if pruned.

    hydra-optuna-sweeper does not give the trial object to the task function: it asks the study
    for a trial, runs a job with the trial's parameters as overrides, and tells the study the
    returned value. With a persistent ``storage`` (``hydra.sweeper.storage=sqlite:///...``) and a
    ``study_name``, this callback reloads the study in the job, finds the running trial from the
    job's overrides (:func:`find_trial`), reports the metric at each epoch and asks the
    ``pruner``. A pruned trial stops training early (``trainer.should_stop``); the job then
    returns its last value, which the sweeper records as the trial's (COMPLETE) value: raising
    ``optuna.TrialPruned`` instead would make the sweeper count a failed trial and abort the
    sweep (``max_failure_rate: 0``). Pruned trials carry the user attribute
    ``pruned_at_epoch``. Without a storage (an in-memory study lives only in the sweeper's
    process) the callback logs that pruning is off and does nothing.

    Under DDP, rank 0 talks to the study and broadcasts the decision to every rank.

    Args:
        storage: Optuna storage URL, normally ``${hydra:sweeper.storage}``.
        study_name: normally ``${hydra:sweeper.study_name}``.
        monitor: the metric reported (``val/f1_overall``).
        pruner: an ``optuna.pruners`` instance (default: ``MedianPruner()``).
        enabled: ``False`` makes the callback a no-op.
        overrides: this job's overrides (default: Hydra's ``hydra.overrides.task``).
    """

    def __init__(self, storage: str | None = None, study_name: str | None = None,
                 monitor: str = DEFAULT_METRIC, pruner: Any = None, enabled: bool = True,
                 overrides: Sequence[str] | None = None) -> None:
        super().__init__()
        self.storage = storage
        self.study_name = study_name
        self.monitor = monitor
        self.pruner = pruner
        self.enabled = enabled
        self.overrides = overrides
        self.trial: Any = None
        self.pruned_at_epoch: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if not self.enabled or stage != "fit" or not trainer.is_global_zero:
            return
        if not self.storage or not self.study_name:
            log.warning("Optuna pruning is off: it needs hydra.sweeper.storage (e.g. "
                        "sqlite:///outputs/optuna.db) and hydra.sweeper.study_name")
            return
        import optuna

        overrides = self.overrides
        if overrides is None:
            from hydra.core.hydra_config import HydraConfig

            overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        study = optuna.load_study(study_name=self.study_name, storage=self.storage,
                                  pruner=self.pruner or optuna.pruners.MedianPruner())
        frozen = find_trial(study, overrides)
        if frozen is None:
            log.warning("Optuna pruning is off: no running trial of study %r in %s matches this "
                        "job's overrides %s", self.study_name, self.storage, overrides)
            return
        self.trial = optuna.trial.Trial(study, frozen._trial_id)
        log.info("Optuna pruning: reporting %s to trial %d of study %r", self.monitor,
                 frozen.number, self.study_name)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self.enabled or trainer.sanity_checking:
            return
        epoch = trainer.current_epoch
        prune = False
        if self.trial is not None:
            score = trainer.callback_metrics.get(self.monitor)
            value = None if score is None else float(score)
            if value is not None and math.isfinite(value):
                self.trial.report(value, step=epoch)
                prune = bool(self.trial.should_prune())
        prune = trainer.strategy.broadcast(prune, src=0)
        if prune and not trainer.should_stop:
            trainer.should_stop = True
            self.pruned_at_epoch = epoch
            if self.trial is not None:
                self.trial.set_user_attr("pruned_at_epoch", epoch)
                log.info("Optuna pruned trial %d at epoch %d: training stops", self.trial.number,
                         epoch)
