"""Reproducible epochs: :class:`EpochSeeding` (``conf/callbacks/epoch_seeding.yaml``) reseeds every
generator from ``(seed, epoch)`` at each epoch start, so a resumed run draws what an unbroken one would."""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, RandomSampler


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
