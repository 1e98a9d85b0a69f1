"""Safe resume: :func:`resolve_ckpt_path` implements ``ckpt_path=last`` (the newest ``last.ckpt`` of
the task's runs) and :func:`check_checkpoint` checks any checkpoint with
``torch.load(weights_only=True)`` before Lightning sees it."""

from __future__ import annotations

import logging
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch

from portraitseg.models.checkpoint import CheckpointError

log = logging.getLogger(__name__)

#: keys every Lightning checkpoint that can resume training has
RESUME_KEYS = ("state_dict", "optimizer_states", "lr_schedulers", "loops", "epoch", "global_step")


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
