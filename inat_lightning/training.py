"""The training task behind ``train.py``: check the config, build everything with Hydra, fit,
test the best checkpoint, write ``metrics.json``."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from inat_lightning.analysis.infer import Predictions, batches
from inat_lightning.analysis.results import write_json
from inat_lightning.callbacks.checkpoints import (
    best_checkpointing,
    drop_resume_points,
    last_metrics,
)
from inat_lightning.checks import check_train_config, check_trainer
from inat_lightning.config import ConfigError, build, build_all
from inat_lightning.data.geo import Place
from inat_lightning.models.calibration import fit_temperature, scores
from inat_lightning.models.card import write_card
from inat_lightning.models.checkpoint import load_classifier, update_checkpoint
from inat_lightning.models.classifier import checked_temperature
from inat_lightning.models.confusion import Confusion
from inat_lightning.models.metric_names import headline, key
from inat_lightning.models.metrics import scalar_metrics
from inat_lightning.models.open_set import OpenSetRule
from inat_lightning.models.prior import PriorFit
from inat_lightning.models.spec import pin_input_spec
from inat_lightning.runs.overrides import command_data_changes, task_overrides
from inat_lightning.runs.resume import resume_checkpoint

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Train and test a classifier; return ``cfg.optimized_metric`` (for sweepers)."""
    check_train_config(cfg)
    ckpt = resume_checkpoint(cfg)  # missing, truncated or foreign: a config error, before work
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)

    callbacks = build_all(cfg.get("callbacks"), "callbacks")
    loggers = build_all(cfg.get("logger"), "logger")
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    check_trainer(trainer, cfg)
    data = cfg.data
    if ckpt and not cfg.get("train", True):  # testing a given model: its own preprocessing
        data = tested_data_config(cfg, ckpt)
    datamodule = build(data, "data")
    try:
        datamodule.setup("fit")
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise ConfigError(f"data: {e}") from e
    model = build(
        cfg.model,
        "model",
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        lineages=datamodule.lineages,
        class_weights=datamodule.class_weights,
        input_spec=datamodule.input_spec(),
        data_fingerprint=datamodule.fingerprint(),
        # continuing from a checkpoint: its weights, not the starting ones again
        **({"weights": None, "weights_path": None} if ckpt else {}),
    )

    if cfg.get("train", True):
        if ckpt:
            log.info("resuming from %s", ckpt)
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
    train_metrics = last_metrics(trainer)  # restored when a resumed fit had no epoch left

    test_metrics: dict[str, float] = {}
    checkpointing = best_checkpointing(trainer)
    best = checkpointing.best_model_path if checkpointing else ""
    calibration = None
    if best and cfg.get("train", True) and cfg.get("calibrate", True):
        calibration = calibrate(trainer, datamodule, best, cfg.get("open_set") or {})
    if best and cfg.get("train", True) and cfg.get("prior") is not None:
        fit_prior(trainer, datamodule, best, build(cfg.prior, "prior"))
    if cfg.get("test", True):
        # the best checkpoint of this fit; with train=false, the given checkpoint
        tested = best or (None if cfg.get("train", True) else ckpt)
        if not tested:
            log.warning(
                "no best checkpoint (fast_dev_run or no checkpointing): testing current weights"
            )
        trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=True)
        tested_metrics = scalar_metrics(trainer.callback_metrics)
        test_metrics = {k: v for k, v in tested_metrics.items() if k.startswith(key("test", ""))}

    metrics = {**train_metrics, **test_metrics}
    summary: dict[str, Any] = {
        "metrics": metrics,
        "best_checkpoint": best or None,
        "class_names": datamodule.class_names,
        "split_sizes": {k: len(v) for k, v in datamodule.datasets.items()},
        "near_duplicates": datamodule.near_duplicate_summary(),
        "chance_accuracy": 1.0 / datamodule.num_classes,
        "tags": list(cfg.get("tags") or []),
        # float sums depend on how the work was split: a resumed run equals an uninterrupted
        # one's metrics only with as many processes and torch threads
        "compute": {"processes": trainer.world_size, "torch_threads": torch.get_num_threads()},
    }
    if calibration is not None:
        summary["calibration"] = calibration
    if checkpointing is not None and checkpointing.best_model_score is not None:
        summary["best"] = {
            "monitor": checkpointing.monitor,
            "score": float(checkpointing.best_model_score),
        }
    if cfg.get("test", True):
        # a collective under DDP: every rank computes, rank 0 writes
        confusion = model.confusion("test")
        if spawned(trainer):  # the test ran in worker processes: count it again here
            confusion = main_process_confusion(
                model, datamodule, tested, trainer.strategy.root_device
            )
        summary["test_confusion"] = confusion.record()
    if not trainer.is_global_zero:
        return None
    if best:
        summary["model_card"] = str(record_results(best, test_metrics, calibration))
    final = {**metrics, **_best_metric(summary)}
    _log_hparams(trainer, cfg, final)
    out = Path(cfg.paths.output_dir) / "metrics.json"
    write_json(out, summary)
    log.info("metrics written to %s", out)
    drop_resume_points(trainer)
    for name in headline("test"):
        if name in metrics:
            log.info("%s = %.4f (chance %.4f)", name, metrics[name], summary["chance_accuracy"])

    return _optimized_value(cfg.get("optimized_metric"), final)


def tested_data_config(cfg: DictConfig, ckpt: str) -> DictConfig:
    """``cfg.data`` with the preprocessing of the checkpoint under test (its input spec); a
    ``data.*`` value of this command that contradicts it is a config error naming the key."""
    spec = load_classifier(ckpt).input_spec
    data = cfg.data.copy()
    if spec is None:  # a checkpoint made before input specs: the command's data config
        return data
    try:
        with open_dict(data):
            pin_input_spec(data, spec, command_data_changes(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    log.info("testing with the checkpoint's input spec: %s", spec.to_dict())
    return data


def spawned(trainer: L.Trainer) -> bool:
    """Whether fit and test ran in spawned worker processes (``trainer=ddp_spawn``): the
    model of this process then holds the weights, not the metric states."""
    return getattr(trainer.strategy, "_start_method", "popen") != "popen"


def main_process_confusion(
    model: Any, datamodule: Any, tested: str | None, device: torch.device
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
    trainer: L.Trainer, datamodule: Any, best: str, open_set: dict[str, Any]
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


def fit_prior(trainer: L.Trainer, datamodule: Any, best: str, settings: PriorFit) -> None:
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


def _optimized_value(name: str | None, metrics: dict[str, float]) -> float | None:
    """The value a sweeper optimises; NaN (a failed trial for Optuna) when it was not logged."""
    if not name:
        return None
    if name not in metrics:
        log.warning("optimized_metric=%s was not logged in this run: returning NaN", name)
    return float(metrics.get(name, math.nan))


def _best_metric(summary: dict[str, Any]) -> dict[str, float]:
    best = summary.get("best")
    return {f"best/{best['monitor']}": best["score"]} if best else {}


def _log_hparams(trainer: L.Trainer, cfg: DictConfig, metrics: dict[str, float]) -> None:
    """Hyperparameters and final metrics (as ``hp/<metric>``) for TensorBoard's HPARAMS tab,
    where the runs of a sweep line up in one table."""
    keep = headline("val", "test")
    hp = {f"hp/{k}": v for k, v in metrics.items() if k in keep or k.startswith("best/")}
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(_flat_hparams(cfg), metrics=hp)
        else:
            lg.log_hyperparams(_flat_hparams(cfg))


def _flat_hparams(cfg: DictConfig) -> dict[str, Any]:
    """The run's main hyperparameters, flat, for TensorBoard's HPARAMS tab."""
    keep = ("data", "model", "trainer", "seed", "tags")
    container = OmegaConf.to_container(cfg, resolve=True)
    flat: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                if k != "_target_":
                    walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            flat[prefix] = node if isinstance(node, int | float | str | bool) else str(node)

    for k in keep:
        walk(k, container.get(k))  # type: ignore[union-attr]
    return flat
