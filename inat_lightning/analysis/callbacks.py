"""Lightning callbacks that write analysis figures to TensorBoard during training and testing."""

from __future__ import annotations

import lightning.pytorch as L
import matplotlib.pyplot as plt
from lightning.pytorch.loggers import TensorBoardLogger

from inat_lightning.analysis.figures import confusion_matrix_figure


def tensorboard_writers(trainer: L.Trainer) -> list:
    """The ``SummaryWriter`` of every TensorBoard logger of the trainer."""
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


class ConfusionMatrixFigure(L.Callback):
    """Logs the row-normalised confusion matrix as ``<stage>/confusion_matrix`` at the end of
    every validation (not the sanity check) and test epoch.

    Args:
        max_classes: above this many classes, draw only the most-confused block.
    """

    def __init__(self, max_classes: int = 30) -> None:
        self.max_classes = max_classes

    def _log(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        cm = module.confusion_matrix(stage).cpu().numpy()  # collective: every rank calls it
        writers = tensorboard_writers(trainer)
        if not writers or not trainer.is_global_zero:
            return
        fig = confusion_matrix_figure(cm, module.class_names, self.max_classes, title=f"{stage}")
        for w in writers:
            w.add_figure(f"{stage}/confusion_matrix", fig, trainer.global_step, close=False)
        plt.close(fig)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")
