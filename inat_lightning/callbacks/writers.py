"""Where callbacks and tasks write pictures and text: every TensorBoard logger of a trainer."""

from __future__ import annotations

import lightning.pytorch as L
from lightning.pytorch.loggers import TensorBoardLogger


def tensorboard_writers(trainer: L.Trainer) -> list:
    """The ``SummaryWriter`` of every TensorBoard logger of the trainer."""
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]
