"""Non-finite loss guard: :class:`NonFiniteLossGuard` (``conf/callbacks/nonfinite.yaml``) stops (or
skips the batch) when the training loss or a gradient is NaN/inf, naming the step and the samples."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

log = logging.getLogger(__name__)


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
