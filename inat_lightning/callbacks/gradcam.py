"""Grad-CAM galleries of a deterministic set of validation and test images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from torchvision.utils import save_image

from inat_lightning.analysis.gradcam import CamSetting, compute_cams, energy_in_box, heatmap
from inat_lightning.analysis.selection import select_examples
from inat_lightning.analysis.tiles import cam_tile, caption_tile
from inat_lightning.callbacks.saved import SavedFiles
from inat_lightning.callbacks.writers import tensorboard_writers
from inat_lightning.data.manifest import safe_folder_name
from inat_lightning.data.transforms import denormalize

COLUMNS = ("index", "label", "pred", "confidence")


def as_tensor(tile: Any) -> torch.Tensor:
    """A tile (PIL image or array, H × W × 3 bytes) as a C × H × W float tensor in [0, 1]."""
    # np.array copies: a PIL image's buffer is read-only, which torch warns about
    return torch.from_numpy(np.array(tile)).permute(2, 0, 1).float() / 255


def cue_box_at(trainer: L.Trainer, record: Any) -> Any:
    """The record's cue box in the network input's pixels (the data module's input spec), or
    ``None``."""
    if record is None or record.cue_box is None or not (record.width and record.height):
        return None
    return trainer.datamodule.input_spec().box(record.cue_box, record.width, record.height)


def publish(
    trainer: L.Trainer, stage: str, groups: dict[str, list[torch.Tensor]], out_dir: Path | None
) -> list[Path]:
    """Each group's grid of rows (3 tiles each) to TensorBoard and, with ``out_dir``, to a PNG
    under ``<out_dir>/<stage>/epochNNN/``; returns the PNGs written."""
    folder = out_dir / stage / f"epoch{trainer.current_epoch:03d}" if out_dir else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    written = []
    for tag, tiles in groups.items():
        grid = torch.stack(tiles)
        for w in tensorboard_writers(trainer):
            w.add_images(f"{stage}/gradcam/{tag}", grid, trainer.global_step)
        if folder:
            path = folder / f"{safe_folder_name(tag)}.png"
            save_image(grid, path, nrow=3, padding=2, pad_value=1.0)
            written.append(path)
    return written


class GradCamOverlays(L.Callback):
    """Grad-CAM overlays of a deterministic set of images, at the end of validation (every
    ``every_n_epochs``) and of testing: per class the most confident correct and wrong
    prediction, plus the most confident mistakes overall.

    The predictions come from the model's step outputs (``logits``), collected here batch by
    batch. Each picked image gives a row: the photo, the CAM of the predicted class and (for
    mistakes) the CAM of the true class. Rows go to TensorBoard (``<stage>/gradcam/<class>`` and
    ``<stage>/gradcam/top_mistakes``) and to PNG grids under ``out_dir/<stage>/epoch<NNN>/``
    (see :meth:`galleries`). The model's weights, gradients and train/eval mode are left as
    they were.

    Args:
        every_n_epochs: validation epochs between two galleries (0: only at test).
        per_class: correct and wrong examples per class.
        top_mistakes: most confident mistakes added.
        max_classes: above this many classes, only those with the most mistakes get their
            examples (the gallery's cost stays bounded at any class count).
        cam: how the CAMs are made (method, layer, score: the ``cam`` config node).
        style: ``red`` (red = CAM, green = blue = 0) or ``colormap`` (jet).
        alpha: heatmap weight in the blend.
        out_dir: where PNG grids go (``None``: TensorBoard only).
        batch_size: CAMs computed this many at a time.
        tile_px: side of each tile: small inputs are upscaled so a person can read them, and
            each tile is captioned (true and predicted class, confidence, and on cued data the
            CAM energy share in the cue box, outlined).
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        per_class: int = 1,
        top_mistakes: int = 8,
        max_classes: int | None = 30,
        cam: CamSetting | None = None,
        style: str = "red",
        alpha: float = 0.5,
        out_dir: str | None = None,
        batch_size: int = 32,
        tile_px: int = 192,
    ) -> None:
        heatmap(np.zeros((1, 1, 1), np.float32), style)
        self.every_n_epochs = every_n_epochs
        self.per_class = per_class
        self.top_mistakes = top_mistakes
        self.max_classes = max_classes
        self.cam = cam or CamSetting()  # checked when built: fails now, not after an epoch
        self.style = style
        self.alpha = alpha
        self.out_dir = Path(out_dir) if out_dir else None
        self.batch_size = batch_size
        self.tile_px = tile_px
        self._rows: list[tuple[torch.Tensor, ...]] = []
        self._written: dict[str, list[Path]] = {}

    def galleries(self, stage: str = "test") -> list[Path]:
        """The PNG grids written for ``stage`` (every epoch's, in order)."""
        return list(self._written.get(stage, []))

    def saved_files(self) -> SavedFiles:
        """The test galleries."""
        return SavedFiles(galleries=self.galleries("test"))

    # ------------------------------------------------------------------ collecting predictions
    def _due(self, trainer: L.Trainer, stage: str) -> bool:
        if stage == "test":
            return True
        epoch = trainer.current_epoch + 1
        return (
            not trainer.sanity_checking
            and bool(self.every_n_epochs)
            and not epoch % self.every_n_epochs
        )

    def _collect(self, outputs: Any, batch: dict[str, Any]) -> None:
        if not isinstance(outputs, dict) or "logits" not in outputs:
            return  # an all-unreadable batch
        confidence, pred = outputs["logits"].softmax(1).max(1)
        self._rows.append(
            (batch["index"].cpu(), batch["label"].cpu(), pred.cpu(), confidence.float().cpu())
        )

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._rows = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
        if self._due(trainer, "val"):
            self._collect(outputs, batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
        self._collect(outputs, batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._due(trainer, "val"):
            self.explain(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.explain(trainer, pl_module, "test")

    # ------------------------------------------------------------------ the gallery
    def _cam(self, photo: np.ndarray, cam: np.ndarray, lines: list[str], box) -> torch.Tensor:
        """A readable CAM tile: upscaled to ``tile_px``, captioned, the cue box outlined."""
        return as_tensor(cam_tile(photo, cam, lines, self.style, self.alpha, self.tile_px, box))

    def explain(self, trainer: L.Trainer, module: L.LightningModule, stage: str) -> None:
        """Pick images from this epoch's predictions, compute their CAMs and write the rows."""
        dataset = (
            getattr(trainer.datamodule, "datasets", {}).get(stage) if trainer.datamodule else None
        )
        if not trainer.is_global_zero or dataset is None or not self._rows:
            return
        pred = {k: torch.cat(col).numpy() for k, col in zip(COLUMNS, zip(*self._rows))}
        picks = select_examples(
            pred["label"],
            pred["pred"],
            pred["confidence"],
            len(module.class_names),
            self.per_class,
            self.top_mistakes,
            self.max_classes,
        )
        loaded = [(p, dataset[int(pred["index"][p.position])]) for p in picks]
        loaded = [(p, s) for p, s in loaded if s is not None]
        if not loaded:
            return
        images = torch.stack([s["image"] for _, s in loaded]).to(module.device)
        labels = [int(pred["label"][p.position]) for p, _ in loaded]
        preds = [int(pred["pred"][p.position]) for p, _ in loaded]

        def cams_of(x: torch.Tensor, targets: list[int]) -> np.ndarray:
            return compute_cams(module.net, x, targets, self.cam, self.batch_size)

        # the predicted class's CAM for every tile; the true class's only where it is shown
        wrong = [k for k in range(len(loaded)) if labels[k] != preds[k]]
        true_cams = dict(
            zip(wrong, cams_of(images[wrong], [labels[k] for k in wrong]) if wrong else [])
        )
        predicted_cams = cams_of(images, preds)
        photos = denormalize(images).cpu()
        names = module.class_names
        records = getattr(trainer.datamodule, "records", {}).get(stage, [])
        groups: dict[str, list[torch.Tensor]] = {}
        for k, (p, sample) in enumerate(loaded):
            photo = photos[k].permute(1, 2, 0).numpy()
            record = records[sample["index"]] if sample["index"] < len(records) else None
            box = cue_box_at(trainer, record)
            captions = (names[labels[k]], names[preds[k]], float(pred["confidence"][p.position]))
            tiles = self._row(photo, box, captions, predicted_cams[k], true_cams.get(k))
            tag = "top_mistakes" if p.kind == "top_mistake" else names[labels[k]]
            groups.setdefault(tag, []).extend(tiles)
        self._written.setdefault(stage, []).extend(publish(trainer, stage, groups, self.out_dir))

    def _row(
        self,
        photo: np.ndarray,
        box: Any,
        captions: tuple[str, str, float],
        predicted_cam: np.ndarray,
        true_cam: np.ndarray | None,
    ) -> list[torch.Tensor]:
        """One gallery row: the photo, the CAM of the predicted class, the CAM of the true
        class (a mistake only; else a blank tile)."""
        truth, guess, confidence = captions
        energy = f", {energy_in_box(predicted_cam, box)[0]:.0%} in the cue box" if box else ""
        shown = [f"true: {truth}", f"pred: {guess} {confidence:.0%}"]
        tiles = [
            as_tensor(caption_tile(photo, shown, self.tile_px, box)),
            self._cam(photo, predicted_cam, [f"CAM of {guess}", f"(predicted){energy}"], box),
        ]
        if true_cam is not None:
            tiles.append(self._cam(photo, true_cam, [f"CAM of {truth}", "(true class)"], box))
        return tiles + [torch.ones_like(tiles[0])] * (3 - len(tiles))
