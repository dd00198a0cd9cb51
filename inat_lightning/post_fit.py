"""The work after a fit, on the best checkpoint: the softmax temperature and the out-of-set
rule (validation split), the place prior (training split), the test confusion when the test ran
in other processes, and the results and model card kept with the checkpoint. Each step on rank
0 (the others wait), each storing into the checkpoint itself: it travels alone."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch

from inat_lightning.analysis.infer import Predictions, batches
from inat_lightning.data.geo import Place
from inat_lightning.data.protocol import ClassifierData
from inat_lightning.models.calibration import fit_temperature, scores
from inat_lightning.models.card import write_card
from inat_lightning.models.checkpoint import load_classifier, update_checkpoint
from inat_lightning.models.classifier import checked_temperature
from inat_lightning.models.confusion import Confusion
from inat_lightning.models.open_set import OpenSetRule
from inat_lightning.models.prior import PriorFit
from inat_lightning.runs.overrides import task_overrides

log = logging.getLogger(__name__)


def test_confusion(
    trainer: L.Trainer, model: Any, datamodule: ClassifierData, tested: str | None
) -> Confusion:
    """The test's confusion counts (a collective under DDP: every rank calls this). When the
    test ran in spawned worker processes (``trainer=ddp_spawn``: several processes, none of them
    this one) this process's model holds no counts: the test split is counted again here, each
    image once, with the tested weights."""
    confusion = model.confusion("test")
    spawned = trainer.world_size > 1 and not torch.distributed.is_initialized()
    if not spawned or confusion.total or not len(datamodule.datasets["test"]):
        return confusion
    return main_process_confusion(model, datamodule, tested, trainer.strategy.root_device)


def main_process_confusion(
    model: Any, datamodule: ClassifierData, tested: str | None, device: torch.device
) -> Confusion:
    """The test confusion counted in this process (each test image once) with the tested
    checkpoint's weights."""
    net = load_classifier(tested, "best checkpoint").net if tested else model.net
    labels, predicted = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for b in batches(
        net, datamodule.datasets["test"], device, datamodule.batch_size, datamodule.num_workers
    ):  # streamed: (true, predicted) pairs, never the test set's logits
        keep = np.isfinite(b.logits).all(1) & (b.labels >= 0)
        labels.append(b.labels[keep])
        predicted.append(b.logits[keep].argmax(1))
    return Confusion.from_pairs(
        np.concatenate(labels), np.concatenate(predicted), datamodule.num_classes
    )


def calibrate(
    trainer: L.Trainer, datamodule: ClassifierData, best: str, open_set: dict[str, Any]
) -> dict[str, float] | None:
    """Fit the softmax temperature of the best checkpoint on the validation split, then the
    out-of-set rule (``open_set``: its score's threshold), and store both in that file (rank 0;
    the others wait), so ``predict.py`` and ``evaluate.py`` report calibrated confidence and
    flag photos of no trained species. Returns the temperature and the validation NLL and ECE
    before and after (``None`` on other ranks or without validation images)."""
    found = None
    if trainer.is_global_zero:
        model = load_classifier(best, "best checkpoint")
        device = trainer.strategy.root_device
        val = datamodule.datasets["val"]
        found_val = Predictions.gather(
            batches(model.net, val, device, datamodule.batch_size, datamodule.num_workers),
            len(val),
        )
        logits, labels = found_val.known()  # finite rows only: a diverged model has none
        if not len(labels):
            log.warning("not calibrated: no finite validation logits (a diverged model?)")
        else:
            t = fit_temperature(logits, labels)
            rule = OpenSetRule.fit(logits.numpy(), t, **open_set)
            update_checkpoint(best, temperature=checked_temperature(t), open_set=rule.to_dict())
            found = {"temperature": t, "open_set_threshold": rule.threshold}
            for when, temperature in (("before", 1.0), ("after", t)):
                found |= {
                    f"val_{k}_{when}": v for k, v in scores(logits, labels, temperature).items()
                }
            log.info(
                "calibrated %s: temperature %.3f, validation ECE %.3f -> %.3f",
                Path(best).name,
                t,
                found["val_ece_before"],
                found["val_ece_after"],
            )
    trainer.strategy.barrier("calibrated")
    return found


def fit_prior(
    trainer: L.Trainer, datamodule: ClassifierData, best: str, settings: PriorFit
) -> None:
    """Fit the place prior on the training split's places and dates and store it in the best
    checkpoint (rank 0; the others wait). Nothing is stored when the data has too few, or when
    the fit fails or diverges: the trained model is kept, without a prior."""
    if trainer.is_global_zero:
        places = [Place.of(r) for r in datamodule.records["train"]]  # the dataset's order
        labels, k = datamodule.datasets["train"].labels, datamodule.num_classes
        try:
            prior = settings.fit(places, labels, k)
        except (RuntimeError, ValueError) as e:  # e.g. out of memory
            log.warning("no place prior stored: its fit failed: %s", e)
            prior = None
        if prior is not None:
            update_checkpoint(best, prior=prior.to_dict())
    trainer.strategy.barrier("prior fitted")


def record_results(
    best: str, test_metrics: dict[str, float], calibration: dict[str, float] | None
) -> Path:
    """Keep the test results and the command that trained it in the best checkpoint (it travels
    alone) and write its model card beside it; returns the card."""
    overrides = [str(o.input_line) for o in task_overrides()]
    results = {"metrics": test_metrics, "calibration": calibration, "overrides": overrides}
    checkpoint = update_checkpoint(best, results=results)
    return write_card(Path(best).parent, checkpoint, Path(best).name)
