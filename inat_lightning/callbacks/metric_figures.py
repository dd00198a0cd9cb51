"""Confusion matrix, per-class bars, the long tail and the look-alike table, after every
validation and test."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import matplotlib.pyplot as plt

from inat_lightning.analysis.figures import (
    confusion_matrix_figure,
    long_tail_figure,
    per_class_bars,
    save,
)
from inat_lightning.analysis.tables import most_confused_pairs, per_class_table, to_markdown
from inat_lightning.callbacks.saved import SavedFiles
from inat_lightning.callbacks.writers import tensorboard_writers


def train_counts(trainer: L.Trainer) -> list[int] | None:
    """Training images per class, from the trainer's data module when it has a train split."""
    try:
        return trainer.datamodule.class_counts.int().tolist()
    except (AttributeError, KeyError):
        return None


class MetricFigures(L.Callback):
    """At the end of every validation (not the sanity check) and test epoch, logs to TensorBoard
    the row-normalised confusion matrix (``<stage>/confusion_matrix``, ordered by taxonomy when
    the model has one), per-class precision and recall (``<stage>/per_class``), accuracy against
    training images (``<stage>/long_tail``) and the most-confused pairs table with their lowest
    common rank (``<stage>/confused_pairs``, TEXT tab). With ``out_dir``, the test figures are
    also saved there as ``<name>.png`` (see :meth:`saved`).

    Args:
        max_classes: above this many classes, the matrix shows only its most-confused block.
        top_pairs: rows of the most-confused pairs table.
        out_dir: folder for the test figures' PNG files (``None``: TensorBoard only).
    """

    def __init__(self, max_classes: int = 30, top_pairs: int = 10, out_dir: str | None = None):
        self.max_classes = max_classes
        self.top_pairs = top_pairs
        self.out_dir = Path(out_dir) if out_dir else None
        self._saved: dict[str, Path] = {}

    def saved_files(self) -> SavedFiles:
        """The PNG files of the last test, by figure name (``confusion_matrix``, ``per_class``,
        ``long_tail``)."""
        return SavedFiles(figures=dict(self._saved))

    def _log(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        confusion = module.confusion(stage)  # collective: every rank calls it
        writers = tensorboard_writers(trainer)
        keep = stage == "test" and self.out_dir is not None
        if not (writers or keep) or not trainer.is_global_zero:
            return
        names, step = module.class_names, trainer.global_step
        taxonomy = getattr(module, "taxonomy", None)
        table = per_class_table(confusion, names, train_counts(trainer))
        figs = {
            "confusion_matrix": confusion_matrix_figure(
                confusion, names, self.max_classes, title=stage, taxonomy=taxonomy
            ),
            "per_class": per_class_bars(table),
        }
        if "train_images" in table[0]:
            figs["long_tail"] = long_tail_figure(table)
        pairs = to_markdown(most_confused_pairs(confusion, names, self.top_pairs, taxonomy))
        for w in writers:
            for tag, fig in figs.items():
                w.add_figure(f"{stage}/{tag}", fig, step, close=False)
            w.add_text(f"{stage}/confused_pairs", pairs, step)
        if keep:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for tag, fig in figs.items():
                path = self.out_dir / f"{tag}.png"
                save(fig, path, close=False)
                self._saved[tag] = path
        for fig in figs.values():
            plt.close(fig)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")
