"""Out-of-memory advice: :class:`OutOfMemoryHint` (``conf/callbacks/oom_hint.yaml``) turns a CPU or GPU
out-of-memory error into a hint naming ``data.batch_size`` / ``data.image_size``."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


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
