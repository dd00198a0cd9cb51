"""The training task behind ``train.py``: check the config, build everything with Hydra, fit,
test the best checkpoint, write ``metrics.json``."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf, open_dict

from inat_lightning import run_files
from inat_lightning.analysis.results import write_json
from inat_lightning.callbacks.checkpoints import (
    best_checkpointing,
    drop_resume_points,
    last_metrics,
)
from inat_lightning.checks import check_train_config, check_trainer
from inat_lightning.config import ConfigError, build, build_all
from inat_lightning.data.protocol import ClassifierData, check_data_module
from inat_lightning.data.resumable import PlaceMismatch
from inat_lightning.models.checkpoint import load_classifier
from inat_lightning.models.metric_names import headline, key
from inat_lightning.models.metrics import scalar_metrics
from inat_lightning.models.spec import pin_input_spec
from inat_lightning.post_fit import calibrate, fit_prior, record_results, test_confusion
from inat_lightning.runs.overrides import command_data_changes
from inat_lightning.runs.resume import resume_checkpoint

log = logging.getLogger(__name__)


def train(cfg: DictConfig) -> float | None:
    """Train and test a classifier; return ``cfg.optimized_metric`` (for sweepers)."""
    check_train_config(cfg)
    ckpt = resume_checkpoint(cfg)  # missing, truncated or foreign: a config error, before work
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    trainer = build_trainer(cfg)
    datamodule = build_datamodule(cfg, ckpt)
    model = build_model(cfg, datamodule, ckpt)
    fitting = cfg.get("train", True)
    if fitting:
        if ckpt:
            log.info("resuming from %s", ckpt)
        try:
            trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt, weights_only=True)
        except PlaceMismatch as e:  # read as the fit restores the loader: before any step
            raise ConfigError(str(e)) from e
    train_metrics = last_metrics(trainer)  # restored when a resumed fit had no epoch left
    checkpointing = best_checkpointing(trainer)
    best = checkpointing.best_model_path if checkpointing else ""
    calibration = None
    if best and fitting and cfg.get("calibrate", True):
        calibration = calibrate(trainer, datamodule, best, cfg.get("open_set") or {})
    if best and fitting and cfg.get("prior") is not None:
        fit_prior(trainer, datamodule, best, build(cfg.prior, "prior"))
    tested = best or (None if fitting else ckpt)  # with train=false, the given checkpoint
    test_metrics = run_test(trainer, model, datamodule, tested) if cfg.get("test", True) else {}
    summary = run_summary(cfg, trainer, datamodule, {**train_metrics, **test_metrics}, best)
    if calibration is not None:
        summary["calibration"] = calibration
    if checkpointing is not None and checkpointing.best_model_score is not None:
        score = float(checkpointing.best_model_score)
        summary["best"] = {"monitor": checkpointing.monitor, "score": score}
    if cfg.get("test", True):
        summary["test_confusion"] = test_confusion(trainer, model, datamodule, tested).record()
    if not trainer.is_global_zero:
        return None
    if best:
        summary["model_card"] = str(record_results(best, test_metrics, calibration))
    return write_results(cfg, trainer, summary)


def build_trainer(cfg: DictConfig) -> L.Trainer:
    """The trainer with the configured callbacks and loggers, checked against the config."""
    callbacks = build_all(cfg.get("callbacks"), "callbacks")
    loggers = build_all(cfg.get("logger"), "logger")
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    check_trainer(trainer, cfg)
    return trainer


def build_datamodule(cfg: DictConfig, ckpt: str | None) -> ClassifierData:
    """The data module, set up for fitting (a bad dataset is a ``data:`` config error); testing
    a given model (``train=false``) uses that model's own preprocessing."""
    data = cfg.data
    if ckpt and not cfg.get("train", True):
        data = tested_data_config(cfg, ckpt)
    datamodule = build(data, "data")  # a bad value: a config error naming its key
    try:
        check_data_module(datamodule)
        datamodule.setup("fit")
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        raise ConfigError(str(e) if str(e).startswith("data.") else f"data: {e}") from e
    return datamodule


def build_model(cfg: DictConfig, datamodule: ClassifierData, ckpt: str | None) -> Any:
    """The classifier for the data module's classes, its preprocessing and its fingerprint;
    continuing from a checkpoint, its weights rather than the starting ones again."""
    return build(
        cfg.model,
        "model",
        num_classes=datamodule.num_classes,
        class_names=datamodule.class_names,
        lineages=datamodule.lineages,
        class_weights=datamodule.class_weights,
        input_spec=datamodule.input_spec().to_dict(),
        data_fingerprint=datamodule.fingerprint(),
        **({"weights": None, "weights_path": None} if ckpt else {}),
    )


def run_test(
    trainer: L.Trainer, model: Any, datamodule: ClassifierData, tested: str | None
) -> dict:
    """Test ``tested`` (the best checkpoint of this fit, or the given one); its ``test/*``
    metrics."""
    if not tested:
        log.warning(
            "no best checkpoint (fast_dev_run or no checkpointing): testing current weights"
        )
    trainer.test(model, datamodule=datamodule, ckpt_path=tested, weights_only=True)
    found = scalar_metrics(trainer.callback_metrics)
    return {k: v for k, v in found.items() if k.startswith(key("test", ""))}


def run_summary(
    cfg: DictConfig,
    trainer: L.Trainer,
    datamodule: ClassifierData,
    metrics: dict[str, float],
    best: str,
) -> dict[str, Any]:
    """What ``metrics.json`` records of every run."""
    return {
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


def write_results(cfg: DictConfig, trainer: L.Trainer, summary: dict[str, Any]) -> float | None:
    """Write ``metrics.json`` (rank 0), log the headline, drop the resume point; return the
    optimised metric."""
    metrics = summary["metrics"]
    final = {**metrics, **_best_metric(summary)}
    _log_hparams(trainer, cfg, final)
    out = Path(cfg.paths.output_dir) / run_files.METRICS
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
    where the runs of a sweep line up in one table. Written after the trainer closed its
    writer, so that one is closed again here: its events are on disk before the process ends
    (a writer's thread left to flush them at exit lost them now and then)."""
    keep = headline("val", "test")
    hp = {f"hp/{k}": v for k, v in metrics.items() if k in keep or k.startswith("best/")}
    for lg in trainer.loggers:
        if isinstance(lg, TensorBoardLogger):
            lg.log_hyperparams(_flat_hparams(cfg), metrics=hp)
            lg.experiment.close()
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
