"""Crash-safe checkpoints: :class:`AtomicModelCheckpoint` (``conf/callbacks/model_checkpoint.yaml``)
writes every checkpoint through the project's one atomic writer, so a kill leaves the previous or the
new file, never half of one; :func:`portraitseg.io.remove_stale_temporaries` cleans up after killed
writers."""

from __future__ import annotations

import logging
import os
from typing import Any

import lightning as L
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint

from portraitseg.io import remove_stale_temporaries, temporary_name, write_torch

log = logging.getLogger(__name__)


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``: the project's one
    writer (:func:`portraitseg.io.write_torch`: temporary file in the same folder, fsync, size
    and zip check, rename, folder fsync); then the temporaries of killed writers are removed.
    If anything fails (or the process is killed) before the rename, ``path`` still holds its
    previous content.
    """
    path = write_torch(path, obj)
    remove_stale_temporaries(path.parent)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with crash-safe saves and safe loads.

    Saving: :func:`atomic_torch_save` for local paths (Lightning's own save stages the file in the
    system temp directory and *moves* it, which is a non-atomic copy when that is another file
    system, and it never fsyncs). Remote (``fsspec`` URL) paths use Lightning's implementation.

    Loading: ``weights_only=True`` unless the caller passes ``False`` explicitly.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        return super().load_checkpoint(
            path, map_location=map_location, weights_only=True if weights_only is None else weights_only
        )


class AtomicModelCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose checkpoints are written atomically and whose ``last.ckpt`` is last.

    ``last.ckpt`` is refreshed after every validation (as Lightning did before 2.6; since 2.6
    it is only written together with a top-k checkpoint, i.e. with ``save_top_k=1`` only when
    the monitored metric improves, so ``ckpt_path=last`` would silently resume from the best
    epoch and lose the epochs after it).

    At setup it installs :class:`AtomicCheckpointIO` as the strategy's checkpoint IO when the
    strategy uses Lightning's default one, so every checkpoint the trainer writes (top-k,
    ``last.ckpt``, ``trainer.save_checkpoint``) is atomic. A custom checkpoint IO (async,
    sharded strategies) is left as configured, with a warning.

    Args:
        save_last_every_n_steps: also refresh ``last.ckpt`` every this many optimizer steps
            (crash safety inside long epochs), on top of the usual saves after each validation
            (Lightning allows only one of ``every_n_train_steps``/``every_n_epochs``). A run
            resumed from such a mid-epoch checkpoint restarts that epoch's data order (a plain
            DataLoader cannot skip the batches already seen), so only resumes from epoch-end
            checkpoints reproduce an uninterrupted run exactly.
        *args, **kwargs: those of :class:`~lightning.pytorch.callbacks.ModelCheckpoint`.
    """

    def __init__(self, *args: Any, save_last_every_n_steps: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if save_last_every_n_steps is not None and save_last_every_n_steps < 1:
            raise ValueError(f"save_last_every_n_steps must be >= 1 or null, got {save_last_every_n_steps}")
        self.save_last_every_n_steps = save_last_every_n_steps

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        if trainer.is_global_zero and self.dirpath and os.path.isdir(self.dirpath):
            for stale in remove_stale_temporaries(self.dirpath):
                log.info("removed %s, left by a checkpoint write that was killed", stale)
        strategy = trainer.strategy
        if type(strategy.checkpoint_io) is TorchCheckpointIO:
            strategy.checkpoint_io = AtomicCheckpointIO()
        elif not isinstance(strategy.checkpoint_io, AtomicCheckpointIO):
            log.warning(
                "AtomicModelCheckpoint: the strategy uses %s; its saves are not made atomic",
                type(strategy.checkpoint_io).__name__,
            )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _save_last_checkpoint(self, trainer: L.Trainer, monitor_candidates: dict[str, Any]) -> None:
        """``save_last: link``: ``last.ckpt`` becomes a link to the top-k file saved at this very
        step (no second copy on disk); at any other step it is a full checkpoint, so it always
        holds the latest state (Lightning's own ``link`` points at the newest top-k file, which
        may be epochs old, and resuming from it would silently lose the epochs after it)."""
        if self.save_last != "link":
            return super()._save_last_checkpoint(trainer, monitor_candidates)
        saved = self._last_checkpoint_saved
        if (saved and self._last_global_step_saved == trainer.global_step and os.path.isfile(saved)
                and not os.path.basename(saved).startswith(self.CHECKPOINT_NAME_LAST)):
            return super()._save_last_checkpoint(trainer, monitor_candidates)
        last = self.format_checkpoint_name(monitor_candidates, self.CHECKPOINT_NAME_LAST)
        if trainer.is_global_zero and os.path.islink(last):
            os.remove(last)  # never write through a link into the top-k file it points at
        self.save_last = True
        try:
            super()._save_last_checkpoint(trainer, monitor_candidates)
        finally:
            self.save_last = "link"

    def _remove_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        """Before a top-k file that ``last.ckpt`` links to is deleted (a better epoch replaced it),
        point the link at the new best file first (an atomic rename), so a kill in between never
        leaves ``last.ckpt`` dangling."""
        last = self.last_model_path
        best = self.best_model_path
        if (trainer.is_global_zero and last and os.path.islink(last) and best and os.path.isfile(best)
                and os.path.realpath(last) == os.path.realpath(filepath)
                and os.path.realpath(best) != os.path.realpath(filepath)):
            tmp = temporary_name(last)
            os.symlink(os.path.relpath(best, os.path.dirname(last)), tmp)
            os.replace(tmp, last)
        super()._remove_checkpoint(trainer, filepath)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        # skipped when Lightning already saved at this step (then it wrote last.ckpt too)
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        n = self.save_last_every_n_steps
        if not n or not self.save_last or trainer.global_step % n:
            return
        if self._should_skip_saving_checkpoint(trainer):
            return
        saved_step = self._last_global_step_saved
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        # a step save must not suppress this step's regular (top-k / after-validation) save
        self._last_global_step_saved = saved_step
