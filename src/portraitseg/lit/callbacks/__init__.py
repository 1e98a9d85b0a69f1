"""Training reliability: atomic checkpoints, safe resume, non-finite loss and out-of-memory guards.

Wired through ``conf/callbacks/default.yaml``:

- :class:`AtomicModelCheckpoint` -- Lightning's ``ModelCheckpoint`` whose files (``last.ckpt``
  included) are written to a temporary file in the same directory, fsynced and renamed, so a
  kill at any moment leaves either the previous or the new checkpoint, never half a file.
- :class:`EpochSeeding` -- reseeds every generator from ``(seed, epoch)`` at each epoch start, so
  a resumed deterministic run draws the same data order, dropout masks and augmentations.
- :class:`NonFiniteLossGuard` -- stops (or skips the batch) when the training loss or a gradient
  is NaN/inf, naming the step, epoch, batch index and sample ids.
- :class:`OutOfMemoryHint` -- turns a CPU or GPU out-of-memory error into advice naming
  ``data.batch_size`` / ``data.image_size``.

:func:`resolve_ckpt_path` implements ``ckpt_path=last`` (the newest ``last.ckpt`` of this task's
runs) and checks any checkpoint with ``torch.load(weights_only=True)`` before Lightning sees it.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import random
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from torch.utils.data import DataLoader, RandomSampler

from portraitseg.io import write_torch
from portraitseg.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)

#: keys every Lightning checkpoint that can resume training has
RESUME_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "epoch", "global_step")


# --------------------------------------------------------------------------------------------
# atomic saving


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save(obj, path)`` that never leaves a partial file at ``path``: the project's one
    writer (:func:`portraitseg.io.write_torch`: temporary file in the same folder, fsync, size
    and zip check, rename, folder fsync); then the temporaries of killed writers are removed.
    If anything fails (or the process is killed) before the rename, ``path`` still holds its
    previous content.
    """
    path = write_torch(path, obj)
    remove_stale_temporaries(path.parent)


#: our temporary files: ``.<name>[.<token>].<pid>.tmp`` (:mod:`portraitseg.io`'s writer)
_TEMPORARY = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)\.tmp")


def remove_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporaries of our own naming (``.<name>.<pid>.tmp``: files, or links made for
    ``last.ckpt``) in ``directory`` whose writing process is gone (killed mid-write); other files
    are never touched (unlinking a link never touches what it points at).

    Returns the paths removed.
    """
    removed = []
    for path in Path(directory).glob(".*.tmp"):
        match = _TEMPORARY.fullmatch(path.name)
        if match and (path.is_file() or path.is_symlink()) and not _pid_alive(match["pid"]):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _pid_alive(pid: str) -> bool:
    if not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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
            tmp = os.path.join(os.path.dirname(last), f".{os.path.basename(last)}.{os.getpid()}.tmp")
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


# --------------------------------------------------------------------------------------------
# random state


class EpochSeeding(Callback):
    """Reseed the training randomness at the start of each epoch from ``(seed, epoch)``.

    Lightning restores model, optimizer, scheduler and loop counters on resume, but not the
    random streams, and a resumed run does not replay what the interrupted one did between its
    last checkpoint and the next epoch (validation, creating the loader iterator: both draw
    from torch's generator). Deriving each epoch's randomness from ``(seed, epoch)`` alone makes
    the data order, dropout and augmentation of epoch ``e`` the same whether or not the run
    was interrupted before it.

    At ``on_train_epoch_start`` (and when a run resumes inside an epoch) this seeds: torch (CPU
    and CUDA), numpy's and Python's global generators; the train loader's ``RandomSampler``
    and the loader's own generator (worker base seeds), which are read lazily when the epoch's
    first batch is fetched; and the train transform's generator (albumentations
    ``Compose.set_random_seed``) when the dataset exposes one. Each DDP rank mixes in its rank
    (distributed samplers split the data by ``(seed, epoch)`` themselves).

    Exact continuation needs ``num_workers=0`` (worker processes of a resumed run's first epoch
    are started before the epoch hook) and an epoch-end checkpoint (a plain DataLoader cannot
    skip the batches of a half-finished epoch).

    Args:
        seed: the base seed; ``None`` takes ``torch.initial_seed()`` (the run's ``seed`` after
            ``seed_everything``). A resumed run keeps the base seed stored in its checkpoint.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._base: int | None = None

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self._base is None:
            self._base = int(self.seed if self.seed is not None else torch.initial_seed())

    def epoch_seeds(self, epoch: int, rank: int = 0) -> tuple[int, int, int]:
        """Seeds of ``epoch`` on process ``rank`` (global generators, sampler, loader)."""
        state = np.random.SeedSequence([self._base or 0, epoch, rank]).generate_state(3)
        return int(state[0]), int(state[1]), int(state[2])

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if getattr(trainer.fit_loop, "restarted_mid_epoch", False):
            self._reseed(trainer)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(trainer)

    def _reseed(self, trainer: L.Trainer) -> None:
        seed, sampler_seed, loader_seed = self.epoch_seeds(trainer.current_epoch, trainer.global_rank)
        torch.manual_seed(seed)  # also seeds every CUDA device
        np.random.seed(seed)
        random.seed(seed)
        loader = trainer.train_dataloader
        if isinstance(loader, DataLoader):
            loader.generator = torch.Generator().manual_seed(loader_seed)
            if isinstance(loader.sampler, RandomSampler):
                loader.sampler.generator = torch.Generator().manual_seed(sampler_seed)
        transform = getattr(getattr(loader, "dataset", None), "transform", None)
        if callable(getattr(transform, "set_random_seed", None)):
            transform.set_random_seed(seed)

    def state_dict(self) -> dict[str, Any]:
        return {"base_seed": self._base}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("base_seed") is not None:
            self._base = int(state_dict["base_seed"])


# --------------------------------------------------------------------------------------------
# non-finite loss


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss or gradient (the message names step, epoch and batch)."""


class NonFiniteLossGuard(Callback):
    """Stop training, or skip the batch, when the loss or a gradient is NaN/inf.

    Checked before the backward pass (loss) and before the optimizer step (gradients), so the
    weights and the optimizer state are never updated from a non-finite value.

    Args:
        on_nonfinite: ``stop`` raises :class:`NonFiniteLossError` naming the global step, epoch,
            batch index and sample ids; ``skip`` drops the batch's gradients so the optimizer
            leaves weights and moments untouched (the LR schedule still advances one step)
            and logs a warning.
        check_grads: also check the gradients (one pass over the parameters per step). Off
            under fp16 loss scaling, whose scaler already skips inf gradient steps.
        max_consecutive_skips: with ``skip``, stop anyway after this many non-finite batches
            in a row (training has diverged).
    """

    def __init__(
        self,
        on_nonfinite: Literal["stop", "skip"] = "stop",
        check_grads: bool = True,
        max_consecutive_skips: int = 10,
    ) -> None:
        if on_nonfinite not in ("stop", "skip"):
            raise ValueError(f"on_nonfinite must be 'stop' or 'skip', got {on_nonfinite!r}")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}")
        self.on_nonfinite = on_nonfinite
        self.check_grads = check_grads
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped = 0
        self._consecutive = 0
        self._batch_idx = -1
        self._ids: list[str] = []
        self._bad: str | None = None

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx
        ids = batch.get("id") if isinstance(batch, Mapping) else None
        self._ids = [str(i) for i in ids] if isinstance(ids, (list, tuple)) else []
        self._bad = None

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        if not torch.isfinite(loss.detach()).all():
            self._bad = f"non-finite training loss ({float(loss.detach().float().mean())})"
            if self.on_nonfinite == "stop":
                raise NonFiniteLossError(self._describe(trainer))

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if self._bad is None and self.check_grads and not _uses_loss_scaling(trainer):
            bad = _first_nonfinite_grad(pl_module)
            if bad is not None:
                self._bad = f"non-finite gradient of {bad}"
        if self._bad is None:
            self._consecutive = 0
            return
        if self.on_nonfinite == "stop":
            raise NonFiniteLossError(self._describe(trainer))
        self.skipped += 1
        self._consecutive += 1
        if self._consecutive >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                self._describe(trainer)
                + f"; {self._consecutive} batches in a row were non-finite (max_consecutive_skips="
                f"{self.max_consecutive_skips}): training has diverged"
            )
        log.warning("%s; batch skipped (on_nonfinite=skip, %d so far)", self._describe(trainer), self.skipped)
        for group in optimizer.param_groups:  # optimizers leave parameters without grad alone
            for p in group["params"]:
                p.grad = None

    def _describe(self, trainer: L.Trainer) -> str:
        ids = ", ".join(self._ids[:16]) + (", ..." if len(self._ids) > 16 else "")
        return (
            f"{self._bad} at global step {trainer.global_step}, epoch {trainer.current_epoch}, "
            f"batch {self._batch_idx}" + (f" (samples: {ids})" if ids else "")
            + ". Usual causes: a learning rate too high (lower optimizer.lr or add "
            "scheduler warmup), a corrupt sample, fp16 overflow (use precision=bf16-mixed or "
            "32-true); set callbacks.nonfinite.on_nonfinite=skip to skip such batches"
        )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))


def _uses_loss_scaling(trainer: L.Trainer) -> bool:
    return getattr(trainer.precision_plugin, "scaler", None) is not None


def _first_nonfinite_grad(module: torch.nn.Module) -> str | None:
    grads = [(n, p.grad) for n, p in module.named_parameters() if p.grad is not None]
    if not grads:
        return None
    norms = torch.stack([torch.linalg.vector_norm(g.detach().float()) for _, g in grads])
    if bool(torch.isfinite(norms).all()):
        return None
    return next(n for (n, _), v in zip(grads, norms.tolist(), strict=True) if not math.isfinite(v))


# --------------------------------------------------------------------------------------------
# out of memory


def is_out_of_memory(error: BaseException) -> str | None:
    """``"GPU"``/``"CPU"`` when ``error`` is an out-of-memory error, else ``None``."""
    if isinstance(error, torch.OutOfMemoryError):
        return "GPU"
    if isinstance(error, MemoryError):
        return "CPU"
    text = str(error)
    if isinstance(error, RuntimeError):
        if "DefaultCPUAllocator: can't allocate memory" in text or "not enough memory" in text:
            return "CPU"
        if "out of memory" in text.lower():
            return "CPU" if "CPU" in text else "GPU"
    return None


class OutOfMemoryHint(Callback):
    """Explain an out-of-memory error (CPU ``DefaultCPUAllocator``, ``MemoryError``, CUDA OOM).

    Adds a note to the exception (printed with its traceback) and logs it: which device ran out,
    where (stage, global step), the current ``data.batch_size`` / ``data.image_size`` and what
    to lower. A process killed by the kernel's OOM killer (SIGKILL) cannot be reported here:
    resume it with ``ckpt_path=last``.
    """

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        device = is_out_of_memory(exception)
        if device is None:
            return
        hint = oom_hint(device, trainer)
        log.error("%s", hint)
        if hasattr(exception, "add_note"):
            exception.add_note(hint)


def oom_hint(device: str, trainer: L.Trainer | None = None) -> str:
    """The advice text for an out-of-memory error on ``device``."""
    where, batch_size, image_size = "", None, None
    if trainer is not None:
        stage = trainer.state.stage.value if trainer.state.stage is not None else "setup"
        where = f" during {stage} at global step {trainer.global_step}"
        hp = getattr(getattr(trainer, "datamodule", None), "hparams", {}) or {}
        batch_size, image_size = hp.get("batch_size"), hp.get("image_size")
    fixes = []
    if batch_size:
        fixes.append(
            f"a smaller batch (data.batch_size={max(1, batch_size // 2)}, now {batch_size}; "
            f"trainer.accumulate_grad_batches=2 keeps the effective batch size)"
        )
    else:
        fixes.append("a smaller batch (data.batch_size=...)")
    if image_size:
        smaller = max(32, image_size * 3 // 4 // 32 * 32)
        fixes.append(f"smaller inputs (data.image_size={smaller}, now {image_size})")
    else:
        fixes.append("smaller inputs (data.image_size=...)")
    extra = (
        "a smaller model, or trainer.precision=bf16-mixed" if device == "GPU"
        else "fewer data.num_workers (each holds decoded images), or a smaller model"
    )
    return f"Out of {device} memory{where}. Try {fixes[0]}, {fixes[1]}, {extra}."


# --------------------------------------------------------------------------------------------
# resume


def check_checkpoint(path: str | os.PathLike, require_resume_state: bool = True) -> dict[str, Any]:
    """Load ``path`` with ``torch.load(weights_only=True)`` (memory-mapped: cheap) and check it.

    Raises :class:`CheckpointError` naming the file when it does not exist, is truncated or
    corrupt, would need arbitrary code to unpickle (refused: nothing of it is executed), or
    (``require_resume_state``) lacks the optimizer/loop state needed to resume training.
    Returns the loaded (memory-mapped) checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=_is_zip(path))
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"{path}: refused: unpickling it needs more than tensors and plain containers "
            f"({first}). Only load checkpoints you trust; this one was not loaded."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(f"{path}: truncated or corrupt checkpoint ({err})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: not a Lightning checkpoint (holds a {type(ckpt).__name__})")
    if require_resume_state:
        missing = [k for k in RESUME_KEYS if k not in ckpt]
        if missing:
            raise CheckpointError(
                f"{path}: cannot resume training from it: missing {', '.join(missing)} "
                "(a weights-only file? resume needs a full Lightning checkpoint such as last.ckpt)"
            )
    return ckpt


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


_LAST = re.compile(r"last(-v\d+)?\.ckpt")


def find_last_checkpoints(task_dir: str | os.PathLike) -> list[Path]:
    """``<task_dir>/runs/*/checkpoints/last.ckpt`` (or Lightning's ``last-vN.ckpt``), newest first.

    Newest by modification time: the run that saved most recently, whatever its name.
    """
    found = [p for p in Path(task_dir).glob("runs/*/checkpoints/last*.ckpt")
             if _LAST.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=lambda p: (p.stat().st_mtime_ns, str(p)), reverse=True)


def resolve_ckpt_path(ckpt_path: str | os.PathLike | None, task_dir: str | os.PathLike) -> str | None:
    """The checkpoint to resume from, checked, for ``Trainer.fit(ckpt_path=...)``.

    Args:
        ckpt_path: ``None`` (start fresh), ``"last"`` (the newest ``last.ckpt`` among this
            task's runs, ``<task_dir>/runs/*/checkpoints/last.ckpt``; a corrupt one is skipped
            with a warning for the next newest) or a path to a checkpoint file.
        task_dir: ``<paths.log_dir>/<task_name>``.

    Every candidate goes through :func:`check_checkpoint` (``weights_only=True``): an unsafe
    file raises :class:`CheckpointError` and is never unpickled.
    """
    if ckpt_path is None or str(ckpt_path) == "":
        return None
    if str(ckpt_path) != "last":
        check_checkpoint(ckpt_path)
        return str(ckpt_path)
    candidates = find_last_checkpoints(task_dir)
    if not candidates:
        raise CheckpointError(
            f"ckpt_path=last: no checkpoint matches {Path(task_dir) / 'runs/*/checkpoints/last.ckpt'}; "
            "check task_name / paths.log_dir, or pass ckpt_path=/path/to/file.ckpt"
        )
    for path in candidates:
        try:
            check_checkpoint(path)
        except CheckpointError as err:
            if "refused" in str(err):
                raise
            log.warning("ckpt_path=last: skipping %s", err)
            continue
        log.info("ckpt_path=last: resuming from %s", path)
        return str(path)
    raise CheckpointError(
        f"ckpt_path=last: every last.ckpt under {task_dir}/runs is unusable (see the warnings above)"
    )
