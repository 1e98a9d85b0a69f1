"""Training reliability callbacks, one module each (as ``conf/callbacks/`` has one file each):

- :class:`AtomicModelCheckpoint` (``model_checkpoint``) -- Lightning's ``ModelCheckpoint`` whose
  files (``last.ckpt`` included) are written to a temporary file in the same directory, fsynced and
  renamed, so a kill at any moment leaves either the previous or the new checkpoint, never half a file.
- :class:`EpochSeeding` (``epoch_seeding``) -- reseeds every generator from ``(seed, epoch)`` at each
  epoch start, so a resumed deterministic run draws the same data order, dropout masks and augmentations.
- :class:`NonFiniteLossGuard` (``nonfinite``) -- stops (or skips the batch) when the training loss or
  a gradient is NaN/inf, naming the step, epoch, batch index and sample ids.
- :class:`OutOfMemoryHint` (``oom_hint``) -- turns a CPU or GPU out-of-memory error into advice naming
  ``data.batch_size`` / ``data.image_size``.

:mod:`.resume`: :func:`resolve_ckpt_path` implements ``ckpt_path=last`` (the newest ``last.ckpt`` of
the task's runs) and checks any checkpoint with ``torch.load(weights_only=True)`` before Lightning
sees it. Every name is importable from here (``_target_: portraitseg.lit.callbacks.EpochSeeding``).
"""

from portraitseg.lit.callbacks.epoch_seeding import EpochSeeding
from portraitseg.lit.callbacks.model_checkpoint import (
    AtomicCheckpointIO,
    AtomicModelCheckpoint,
    atomic_torch_save,
    remove_stale_temporaries,
)
from portraitseg.lit.callbacks.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from portraitseg.lit.callbacks.oom_hint import OutOfMemoryHint, is_out_of_memory, oom_hint
from portraitseg.lit.callbacks.resume import (
    RESUME_KEYS,
    CheckpointError,
    check_checkpoint,
    find_last_checkpoints,
    resolve_ckpt_path,
)

__all__ = [
    "RESUME_KEYS", "AtomicCheckpointIO", "AtomicModelCheckpoint", "CheckpointError", "EpochSeeding",
    "NonFiniteLossError", "NonFiniteLossGuard", "OutOfMemoryHint", "atomic_torch_save", "check_checkpoint",
    "find_last_checkpoints", "is_out_of_memory", "oom_hint", "remove_stale_temporaries", "resolve_ckpt_path",
]
