"""The species classifier: a ResNet in a ``LightningModule`` with SGD + ReduceLROnPlateau and
torchmetrics (micro/macro accuracy, top-5, macro F1/precision/recall, per-class F1) and sparse
confusion counts (:mod:`~inat_lightning.models.confusion`: no ``K × K`` state), all logged per
stage as ``<stage>/<metric>``."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning.pytorch as L
import torch
from torch import nn

from inat_lightning import __version__
from inat_lightning.data.spec import InputSpec
from inat_lightning.data.taxonomy import RANKS, Lineage, Taxonomy
from inat_lightning.models.backbones import BACKBONES, build_backbone, check_resnet_args
from inat_lightning.models.calibration import TEMPERATURE_RANGE
from inat_lightning.models.card import VERSION_KEY
from inat_lightning.models.confusion import Confusion, ConfusionPairs, rank_scalars
from inat_lightning.models.metric_names import MONITOR, STAGES, key
from inat_lightning.models.metrics import build_metrics
from inat_lightning.models.open_set import OpenSetRule
from inat_lightning.models.prior import PlacePrior

#: classes up to which each one's F1 is logged as a scalar (``<stage>/f1_class/<name>``)
PER_CLASS_SCALARS = 100


def check_classifier_args(
    depth: int = 101,
    weights: str | None = None,
    weights_path: str | None = None,
    label_smoothing: float = 0.0,
    backbone: str = "resnet",
) -> None:
    """The rules of :class:`Classifier`'s own arguments, also run on the config before any work
    (the optimizer and scheduler check theirs when called)."""
    BACKBONES.check(backbone, "backbone")  # installed (a plugin is loaded: its errors now)
    check_resnet_args(depth, weights, weights_path)
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing={label_smoothing}: must be in [0, 1)")


def checked_temperature(value: Any) -> float:
    """A checkpoint's temperature: a number in :data:`TEMPERATURE_RANGE`, what calibration fits
    (the file may come from anyone: 1e-30 would make every probability 1)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    low, high = TEMPERATURE_RANGE
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ValueError(f"temperature={value!r:.80}: must be a number in [{low}, {high}]")
    return float(value)


def check_classes(num_classes: Any, class_names: Any, lineages: Any) -> None:
    """The classes of a classifier (its arguments, or a checkpoint's that may come from anyone):
    ``num_classes`` an integer >= 1; the names, when given, one unique non-empty text per
    output; the lineages, when given, of those classes, each mapping ranks to names. A
    ``ValueError`` naming the value."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes={num_classes!r:.80}: must be an integer >= 1")
    if class_names is not None:
        if not isinstance(class_names, list) or not all(
            isinstance(c, str) and c for c in class_names
        ):
            raise ValueError("class_names: must be a list of non-empty texts")
        if len(class_names) != num_classes:
            raise ValueError(f"class_names: {len(class_names)} names for {num_classes} classes")
        if len(set(class_names)) != num_classes:
            twice = next(c for c, n in Counter(class_names).items() if n > 1)
            raise ValueError(f"class_names: {twice!r:.80} appears twice")
    if lineages is None:
        return
    known = set(class_names or (str(i) for i in range(num_classes)))
    if not isinstance(lineages, Mapping):
        raise ValueError("lineages: must map class names to lineages")
    for name, lineage in lineages.items():
        if name not in known:
            raise ValueError(f"lineages: {name!r:.80} is not one of the class names")
        if not isinstance(lineage, Mapping) or not all(
            r in RANKS and isinstance(v, str) for r, v in lineage.items()
        ):
            raise ValueError(f"lineages: {name!r:.80}: must map ranks {RANKS} to names")


def plain(value: Any) -> Any:
    """Nested mappings and sequences (OmegaConf's included) as plain dicts and lists: what a
    checkpoint loaded with ``weights_only=True`` may hold."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        return [plain(v) for v in value]
    return value


def stage_metrics(num_classes: int) -> tuple[nn.ModuleDict, nn.ModuleDict]:
    """Per stage, the per-photo (true, predicted) pairs (``O(photos)`` state, never a K × K
    matrix) and the scalar metrics reading them (the stage's macro scores and its confusion
    counts). Keys get a suffix: a ModuleDict key "train" would shadow ``nn.Module.train()``."""
    confusions = nn.ModuleDict({f"{s}_": ConfusionPairs(num_classes) for s in STAGES})
    metrics = {
        f"{s}_": build_metrics(num_classes, confusions[f"{s}_"], prefix=f"{s}/") for s in STAGES
    }
    return confusions, nn.ModuleDict(metrics)


class StageConfusions:
    """A LightningModule's per-stage confusion counts (``self.confusions``, see
    :func:`stage_metrics`): reset at each epoch's start; at the end of a validation or test
    epoch, per-class F1 (up to :data:`PER_CLASS_SCALARS` classes) and the rank accuracies
    (``self.taxonomy``) logged from them."""

    def confusion(self, stage: str) -> Confusion:
        """The current epoch's confusion counts of ``stage`` (synced across devices: a
        collective under DDP, every rank calls it)."""
        return self.confusions[f"{stage}_"].compute()

    def _epoch_start(self, stage: str) -> None:
        self.confusions[f"{stage}_"].reset()

    def _epoch_end(self, stage: str) -> None:
        if self.trainer.sanity_checking:
            return
        confusion = self.confusion(stage)
        if len(self.class_names) <= PER_CLASS_SCALARS:  # above: per_class.csv holds every class
            _, _, f1 = confusion.precision_recall_f1()
            self.log_dict(
                {key(stage, f"f1_class/{n}"): float(v) for n, v in zip(self.class_names, f1)}
            )
        if self.taxonomy is not None:  # the same synced counts on every rank
            found = rank_scalars(confusion, self.taxonomy)
            self.log_dict({key(stage, k): v for k, v in found.items() if not math.isnan(v)})

    def on_train_epoch_start(self) -> None:
        self._epoch_start("train")

    def on_validation_epoch_start(self) -> None:
        self._epoch_start("val")

    def on_test_epoch_start(self) -> None:
        self._epoch_start("test")

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")


class Classifier(StageConfusions, L.LightningModule):
    """ResNet species classifier.

    Args:
        num_classes: size of the head (from the data module).
        class_names: label names, in index order; kept in the checkpoint for evaluation.
        optimizer: partial optimizer (``torch.optim.SGD`` in config), called with the parameters;
            needed for training only, so a checkpoint loads for evaluation without it.
        scheduler: partial LR scheduler, called with the optimizer; ``None`` for a constant LR.
        monitor: metric the scheduler watches (``ReduceLROnPlateau``).
        depth: ResNet depth (:func:`inat_lightning.models.backbones.resnet`, as the next three).
        weights: a torchvision weights name (downloads).
        weights_path: a local state dict or checkpoint to start from.
        zero_init_residual: start every residual branch at zero.
        backbone: the network's name in :data:`~inat_lightning.models.backbones.BACKBONES`
            (``resnet``, or one of your own package's: ``docs/extending.md``).
        backbone_args: plain values another backbone is called with (with ``num_classes``).
        label_smoothing: cross-entropy label smoothing.
        class_weights: per-class loss weights (long-tailed data); ``None`` = uniform.
        channels_last: NHWC memory format (faster on CPU from ~128 px, and on tensor cores).
        compile: run the network through ``torch.compile`` (GPU speed-up; none measured on this
            CPU). The compiled wrapper is kept out of the state dict: checkpoints stay loadable
            without it.
        compile_backend: ``torch.compile`` backend (``inductor``; ``eager`` to check wiring).
        lineages: class name → its lineage (rank → name, from the dataset's ``taxa.csv``);
            kept in the checkpoint. With it, val and test also log genus/family accuracy and
            the share of mistakes within the genus (see :mod:`inat_lightning.data.taxonomy`).
        input_spec: how the inputs are made (:class:`~inat_lightning.models.spec.InputSpec` as
            a dict, from the data module); kept in the checkpoint, so it predicts alone.
        data_fingerprint: what it learned from (manifest hash, split settings, training
            counts, licences); kept in the checkpoint for the model card.
    """

    def __init__(
        self,
        num_classes: int,
        optimizer: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler: Callable[..., Any] | None = None,
        monitor: str = MONITOR,
        class_names: Sequence[str] | None = None,
        depth: int = 101,
        weights: str | None = None,
        weights_path: str | None = None,
        zero_init_residual: bool = False,
        backbone: str = "resnet",
        backbone_args: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
        channels_last: bool = False,
        compile: bool = False,
        compile_backend: str = "inductor",
        lineages: dict[str, Lineage] | None = None,
        input_spec: dict[str, Any] | None = None,
        data_fingerprint: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        check_classifier_args(depth, weights, weights_path, label_smoothing)
        spec = InputSpec.from_dict(input_spec, "input_spec") if input_spec is not None else None
        input_spec = spec.to_dict() if spec is not None else None
        data_fingerprint = plain(data_fingerprint) if data_fingerprint is not None else None
        # plain Python values (not OmegaConf lists) and no partials in the checkpoint: it then
        # loads with torch.load(weights_only=True)
        class_names = [str(c) for c in class_names] if class_names is not None else None
        lineages = {str(c): dict(lin) for c, lin in lineages.items()} if lineages else None
        backbone_args = plain(backbone_args) if backbone_args else None
        check_classes(num_classes, class_names, lineages)
        self.save_hyperparameters(logger=False, ignore=["optimizer", "scheduler", "class_weights"])
        self.optimizer, self.scheduler = optimizer, scheduler
        self.class_names = list(class_names or [str(i) for i in range(num_classes)])
        self.taxonomy = Taxonomy(self.class_names, lineages) if lineages else None
        #: how its inputs are made; ``None`` in a checkpoint made before input specs
        self.input_spec: InputSpec | None = spec
        #: softmax temperature fitted on the validation split after training (1 = as trained);
        #: kept in the checkpoint under ``"temperature"``, see models/calibration.py
        self.temperature = 1.0
        #: p(species | place, season), fitted on the training split after training (or None);
        #: kept under ``"prior"``, see models/prior.py
        self.prior: PlacePrior | None = None
        #: the out-of-set score's threshold fitted on the validation split (or None); kept
        #: under ``"open_set"``, see models/open_set.py
        self.open_set: OpenSetRule | None = None
        self._stepped_epoch = -1  # the last epoch whose scheduler step was taken
        self.net = build_backbone(
            backbone, num_classes, backbone_args, depth=depth, weights=weights,
            weights_path=weights_path, zero_init_residual=zero_init_residual,
        )  # fmt: skip
        self.channels_last = channels_last
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        # a plain list hides the compiled wrapper from state_dict() and from Module traversal
        self._compiled = [torch.compile(self.net, backend=compile_backend)] if compile else []
        self.criterion = nn.CrossEntropyLoss(weight=class_weights, label_smoothing=label_smoothing)
        self.confusions, self.metrics = stage_metrics(num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self._compiled[0](x) if self._compiled else self.net(x)

    @property
    def backbone(self) -> nn.ModuleList:
        """Every layer but the classification head (``fc``): what Lightning's
        ``BackboneFinetuning`` callback freezes for the first epochs of a fine-tune."""
        return nn.ModuleList(m for name, m in self.net.named_children() if name != "fc")

    # ------------------------------------------------------------------ steps
    def _step(self, batch: dict[str, Any], stage: str) -> dict[str, torch.Tensor] | None:
        """Loss and metrics of one batch; returns ``loss`` and the detached ``logits`` (the
        outputs that callbacks such as the Grad-CAM galleries read in ``on_*_batch_end``),
        ``None`` when every image of the batch was unreadable."""
        x, y = batch["image"], batch["label"]
        if batch.get("n_skipped") is not None:
            self.log(
                key(stage, "skipped_images"),
                float(batch["n_skipped"]),
                reduce_fx="sum",
                on_step=False,
                on_epoch=True,
                batch_size=1,
            )
        if x is None:
            return None
        logits = self(x)
        loss = self.criterion(logits, y)
        self.log(
            key(stage, "loss"),
            loss,
            on_step=stage == "train",
            on_epoch=True,
            prog_bar=True,
            batch_size=len(y),
        )
        metrics = self.metrics[f"{stage}_"]
        metrics.update(logits, y)
        shown = {key("val", "acc"), self.hparams.monitor}
        for name, metric in metrics.items():
            bar = name in shown
            self.log(name, metric, on_step=False, on_epoch=True, batch_size=len(y), prog_bar=bar)
        return {"loss": loss, "logits": logits.detach()}

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        out = self._step(batch, "train")
        return out["loss"] if out else None

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> dict | None:
        return self._step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> dict | None:
        return self._step(batch, "test")

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[VERSION_KEY] = __version__  # which release wrote it (MODEL.md says it)
        checkpoint["temperature"] = float(self.temperature)
        checkpoint["scheduler_stepped_epoch"] = self._stepped_epoch

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """What training added beside the weights, checked (:func:`stored_extras`)."""
        found = stored_extras(checkpoint, self.hparams["num_classes"])
        self.temperature, self.prior, self.open_set, self._stepped_epoch = found

    # ------------------------------------------------------------------ optimisation
    def on_train_epoch_end(self) -> None:
        """The epoch's learning-rate scheduler step, taken here rather than by Lightning's loop
        (see :meth:`lr_scheduler_step`): before the epoch's resume checkpoint is written, and
        once per epoch however often the epoch end is replayed. Lightning skips the step of an
        epoch whose end a resumed run replays (it does not keep a plateau scheduler's metric),
        which leaves a resumed run's schedule one epoch behind an uninterrupted one."""
        if self._stepped_epoch == self.current_epoch or self.trainer.sanity_checking:
            return
        self._stepped_epoch = self.current_epoch
        for config in self.trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                value = self.trainer.callback_metrics.get(config.monitor)
                if value is not None:  # no validation this epoch: nothing to compare
                    config.scheduler.step(float(value))
            else:
                config.scheduler.step()

    def lr_scheduler_step(self, scheduler: Any, metric: Any) -> None:
        """Lightning's own stepping, turned off: :meth:`on_train_epoch_end` steps."""

    def configure_optimizers(self) -> dict[str, Any]:
        if self.optimizer is None:
            raise ValueError("optimizer: required for training (model.optimizer in config)")
        # only trainable parameters: a frozen backbone joins later as its own param group
        optimizer = self.optimizer(params=[p for p in self.parameters() if p.requires_grad])
        if self.scheduler is None:
            return {"optimizer": optimizer}
        return {
            "optimizer": optimizer,
            "lr_scheduler": {
                "scheduler": self.scheduler(optimizer=optimizer),
                "monitor": self.hparams.monitor,
                "interval": "epoch",
                "frequency": 1,
            },
        }


def stored_extras(
    checkpoint: Mapping[str, Any], num_classes: int
) -> tuple[float, PlacePrior | None, OpenSetRule | None, int]:
    """What training adds to a checkpoint beside the weights — temperature, place prior,
    out-of-set rule, the last epoch its scheduler stepped — each checked (the file may come
    from anyone); a ``ValueError`` naming the part."""
    prior, rule = checkpoint.get("prior"), checkpoint.get("open_set")
    epoch = checkpoint.get("scheduler_stepped_epoch", -1)
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < -1:
        raise ValueError(f"scheduler_stepped_epoch={epoch!r:.80}: must be an integer >= -1")
    return (
        checked_temperature(checkpoint.get("temperature", 1.0)),
        None if prior is None else PlacePrior.from_dict(prior, num_classes, "prior"),
        None if rule is None else OpenSetRule.from_dict(rule, "open_set"),
        epoch,
    )
