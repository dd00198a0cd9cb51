"""Reproducible epochs: every training epoch reseeded from ``seed + epoch``, for exact resume."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.fabric.utilities.seed import seed_everything


class EpochSeed(L.Callback):
    """Reseeds Python, NumPy and torch for every training epoch from ``seed + epoch``, so each
    epoch's shuffling, augmentations and loader-worker seeds depend only on the seed and the
    epoch number. A run resumed from an end-of-epoch checkpoint (after a crash or ``SIGKILL``
    mid-epoch) then replays the lost epoch exactly as an uninterrupted run would have.

    Lightning creates (and prefetches from) the train loader of a fit's first epoch before
    ``on_train_epoch_start``, so that epoch is seeded at fit start and again after the sanity
    check; later epochs at ``on_train_epoch_start``. With loader workers, keep
    ``data.persistent_workers=false`` (the default) so they restart, reseeded, every epoch.

    Args:
        seed: base seed; ``None`` leaves the RNGs alone.
    """

    def __init__(self, seed: int | None) -> None:
        self.seed = seed
        self.next_epoch = 0  # saved in checkpoints: the epoch a resumed fit starts with
        self._first_epoch_seeded = False

    def _reseed(self, epoch: int) -> None:
        if self.seed is not None:
            seed_everything(self.seed + epoch, workers=True, verbose=False)

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(self.next_epoch)
        self._first_epoch_seeded = True

    def on_sanity_check_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reseed(self.next_epoch)  # validation loaders drew from the RNGs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._first_epoch_seeded:
            self._reseed(trainer.current_epoch)
        self._first_epoch_seeded = False

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        finished = batch_idx + 1 >= trainer.num_training_batches
        self.next_epoch = trainer.current_epoch + int(finished)

    def state_dict(self) -> dict[str, Any]:
        return {"next_epoch": self.next_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.next_epoch = int(state_dict["next_epoch"])
