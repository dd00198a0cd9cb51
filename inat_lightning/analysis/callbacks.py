"""Lightning callbacks that write analysis figures to TensorBoard during training and testing."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import matplotlib.pyplot as plt
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torchvision.utils import save_image

from inat_lightning.analysis.figures import confusion_matrix_figure, per_class_bars
from inat_lightning.analysis.gradcam import cam_method, compute_cams, heatmap, overlay
from inat_lightning.analysis.selection import select_examples
from inat_lightning.analysis.tables import most_confused_pairs, per_class_table, to_markdown
from inat_lightning.data.manifest import safe_folder_name
from inat_lightning.data.transforms import denormalize


def tensorboard_writers(trainer: L.Trainer) -> list:
    """The ``SummaryWriter`` of every TensorBoard logger of the trainer."""
    return [lg.experiment for lg in trainer.loggers if isinstance(lg, TensorBoardLogger)]


class MetricFigures(L.Callback):
    """At the end of every validation (not the sanity check) and test epoch, logs to TensorBoard
    the row-normalised confusion matrix (``<stage>/confusion_matrix``), per-class precision and
    recall (``<stage>/per_class``) and the most-confused pairs table (``<stage>/confused_pairs``,
    TEXT tab).

    Args:
        max_classes: above this many classes, the matrix shows only its most-confused block.
        top_pairs: rows of the most-confused pairs table.
    """

    def __init__(self, max_classes: int = 30, top_pairs: int = 10) -> None:
        self.max_classes = max_classes
        self.top_pairs = top_pairs

    def _log(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        if trainer.sanity_checking:
            return
        cm = module.confusion_matrix(stage).cpu().numpy()  # collective: every rank calls it
        writers = tensorboard_writers(trainer)
        if not writers or not trainer.is_global_zero:
            return
        names, step = module.class_names, trainer.global_step
        figs = {
            "confusion_matrix": confusion_matrix_figure(cm, names, self.max_classes, title=stage),
            "per_class": per_class_bars(per_class_table(cm, names)),
        }
        pairs = to_markdown(most_confused_pairs(cm, names, self.top_pairs))
        for w in writers:
            for tag, fig in figs.items():
                w.add_figure(f"{stage}/{tag}", fig, step, close=False)
            w.add_text(f"{stage}/confused_pairs", pairs, step)
        for fig in figs.values():
            plt.close(fig)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._log(trainer, pl_module, "test")


class GradCamOverlays(L.Callback):
    """Grad-CAM overlays of a deterministic set of images, at the end of validation (every
    ``every_n_epochs``) and of testing: per class the most confident correct and wrong
    prediction, plus the most confident mistakes overall.

    Each picked image gives a row: the photo, the CAM of the predicted class and (for mistakes)
    the CAM of the true class. Rows go to TensorBoard (``<stage>/gradcam/<class>`` and
    ``<stage>/gradcam/top_mistakes``) and to PNG grids under ``out_dir/<stage>/epoch<NNN>/``.
    The model's weights, gradients and train/eval mode are left as they were.

    Args:
        every_n_epochs: validation epochs between two galleries (0: only at test).
        per_class: correct and wrong examples per class.
        top_mistakes: most confident mistakes added.
        method: a pytorch-grad-cam class name (GradCAM, GradCAMPlusPlus, EigenCAM, ScoreCAM…).
        target_layer: dotted name of the layer to explain (``layer4``: the last ResNet block).
        style: ``red`` (red = CAM, green = blue = 0) or ``colormap`` (jet).
        alpha: heatmap weight in the blend.
        out_dir: where PNG grids go (``None``: TensorBoard only).
        batch_size: CAMs computed this many at a time.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        per_class: int = 1,
        top_mistakes: int = 8,
        method: str = "GradCAM",
        target_layer: str = "layer4",
        style: str = "red",
        alpha: float = 0.5,
        out_dir: str | None = None,
        batch_size: int = 32,
    ) -> None:
        cam_method(method)  # fail now, naming the method, not after an epoch
        heatmap(np.zeros((1, 1, 1), np.float32), style)
        self.every_n_epochs = every_n_epochs
        self.per_class = per_class
        self.top_mistakes = top_mistakes
        self.method = method
        self.target_layer = target_layer
        self.style = style
        self.alpha = alpha
        self.out_dir = Path(out_dir) if out_dir else None
        self.batch_size = batch_size
        self.written: list[Path] = []

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if trainer.sanity_checking or not self.every_n_epochs or epoch % self.every_n_epochs:
            return
        self.explain(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.explain(trainer, pl_module, "test")

    def explain(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        dataset = (
            getattr(trainer.datamodule, "datasets", {}).get(stage) if trainer.datamodule else None
        )
        pred = module.predictions(stage)
        if not trainer.is_global_zero or dataset is None or not len(pred["index"]):
            return
        picks = select_examples(
            pred["label"],
            pred["pred"],
            pred["confidence"],
            len(module.class_names),
            self.per_class,
            self.top_mistakes,
        )
        loaded = [(p, dataset[int(pred["index"][p.i])]) for p in picks]
        loaded = [(p, s) for p, s in loaded if s is not None]
        if not loaded:
            return
        images = torch.stack([s["image"] for _, s in loaded]).to(module.device)
        labels = [int(pred["label"][p.i]) for p, _ in loaded]
        preds = [int(pred["pred"][p.i]) for p, _ in loaded]
        cams = [
            compute_cams(module.net, images, t, self.method, self.target_layer, self.batch_size)
            for t in (preds, labels)
        ]
        photos = denormalize(images).cpu()
        over_pred, over_true = (overlay(photos, c, self.style, self.alpha) for c in cams)
        groups: dict[str, list[torch.Tensor]] = {}
        for k, (p, _) in enumerate(loaded):
            row = [photos[k], over_pred[k]] + ([over_true[k]] if labels[k] != preds[k] else [])
            tag = "top_mistakes" if p.kind == "top_mistake" else module.class_names[labels[k]]
            groups.setdefault(tag, []).extend(row + [torch.ones_like(photos[k])] * (3 - len(row)))
        step = trainer.global_step
        folder = (
            self.out_dir / stage / f"epoch{trainer.current_epoch:03d}" if self.out_dir else None
        )
        if folder:
            folder.mkdir(parents=True, exist_ok=True)
        for tag, tiles in groups.items():
            grid = torch.stack(tiles)
            for w in tensorboard_writers(trainer):
                w.add_images(f"{stage}/gradcam/{tag}", grid, step)
            if folder:
                path = folder / f"{safe_folder_name(tag)}.png"
                save_image(grid, path, nrow=3, padding=2, pad_value=1.0)
                self.written.append(path)
