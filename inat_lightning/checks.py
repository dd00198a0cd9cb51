"""The tasks' early checks: every bad value fails before any work, with a message naming its
key. Argument rules are the constructors' own (run here through
:func:`~inat_lightning.config.check_args` or on a dummy call); here live the rules that tie
several keys together and those several tasks share (a required checkpoint). Settings only one
task has are checked by that task, before its work (e.g. ``prediction.check_settings``)."""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.accelerators import CPUAccelerator
from omegaconf import DictConfig, OmegaConf

from inat_lightning.config import ConfigError, build, call_partial, check_args, check_targets
from inat_lightning.models.classifier import check_classifier_args
from inat_lightning.models.metric_names import SCALARS, STAGES, is_optimizable
from inat_lightning.models.open_set import check_rule_settings

log = logging.getLogger(__name__)


def check_train_config(cfg: DictConfig) -> None:
    """Checks that need no heavy object: strict keys, required values, the optimised metric,
    and the model, optimizer and scheduler arguments."""
    check_targets(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required (set on the command line, key=value)")
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ConfigError(f"seed={seed!r}: must be an integer or null")
    metric = cfg.get("optimized_metric")
    if metric is not None and not is_optimizable(str(metric)):
        raise ConfigError(
            f"optimized_metric={metric}: must be [best/]<stage>/<metric> with stage "
            f"{'|'.join(STAGES)} and metric {'|'.join(SCALARS)}"
        )
    check_monitor(cfg.get("monitor"), cfg.get("monitor_mode", "max"))
    model = cfg.model
    check_args(check_classifier_args, model, "model")
    fine_tuning = "backbone_finetuning" in (cfg.get("callbacks") or {})
    if fine_tuning and not (model.get("weights_path") or model.get("weights")):
        raise ConfigError(
            "model.weights_path: required for fine-tuning (callbacks.backbone_finetuning), "
            "e.g. model.weights_path=weights/resnet101.pth"
        )
    prior = cfg.get("prior")
    if prior is not None:
        if not isinstance(prior, DictConfig):
            raise ConfigError(f"prior={prior!r}: must be the fit's settings (prior.*) or null")
        build(prior, "prior")  # PriorFit checks its own values (every prior.* key)
    check_open_set(cfg.get("open_set") or {})
    build(cfg.cam, "cam")  # the CAM setting every gallery uses: method and score registered
    # the optimizer and scheduler check their own arguments, on a dummy parameter
    dummy = [torch.zeros(1, requires_grad=True)]
    optimizer = call_partial(model.optimizer, "model.optimizer", dummy)
    if model.get("scheduler"):
        call_partial(model.scheduler, "model.scheduler", optimizer)


def check_monitor(monitor: Any, mode: Any) -> None:
    """The metric the fit watches (scheduler, best checkpoint, early stopping) must be logged
    while fitting: ``val/<metric>`` or ``train/<metric>``; its mode ``max`` or ``min``."""
    name = str(monitor)
    if monitor is None or not is_optimizable(name) or name.split("/")[0] not in ("train", "val"):
        raise ConfigError(
            f"monitor={monitor}: must be val/<metric> or train/<metric> (logged during the fit) "
            f"with metric {'|'.join(SCALARS)}"
        )
    if mode not in ("max", "min"):
        raise ConfigError(f"monitor_mode={mode!r}: must be max or min (min for a loss)")


def check_open_set(settings: Any) -> None:
    """``open_set.*`` (the rule fitted after training, its arguments): known keys only, each
    value by the rule's own check (an unknown key would break the fit after training)."""
    if not isinstance(settings, Mapping):
        raise ConfigError(f"open_set={settings!r}: must be a mapping (score, accept)")
    known = inspect.signature(check_rule_settings).parameters
    unknown = sorted(set(settings) - set(known))
    if unknown:
        raise ConfigError(f"open_set.{unknown[0]}: unknown key; accepted: {', '.join(known)}")
    check_args(check_rule_settings, settings, "open_set")


def setting(cfg: DictConfig, name: str, kind: type, rule: Callable[[Any], bool], want: str):
    """``cfg[name]`` as ``kind`` obeying ``rule``, else a config error naming the key (the
    settings of evaluate and predict, checked before any work)."""
    value = cfg.get(name)
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        converted = kind(value)
        if kind is int and converted != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: must be {want}") from None
    if not rule(converted):
        raise ConfigError(f"{name}={value!r}: must be {want}")
    return converted


def non_negative(value: float) -> bool:
    """A finite number >= 0 (a fusion weight)."""
    return 0 <= value < math.inf


def require_checkpoint(cfg: DictConfig) -> None:
    """``ckpt_path`` given (evaluate, predict): the file itself is checked when read."""
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path: required, e.g. ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt"
        )


def check_trainer(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Checks that need the resolved accelerator; run before any data is touched."""
    on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
    if on_cpu and cfg.trainer.get("sync_batchnorm"):
        raise ConfigError("trainer.sync_batchnorm=true: SyncBatchNorm needs GPUs; false on CPU")
    precision = str(cfg.trainer.get("precision", ""))
    if on_cpu and ("16" in precision):
        log.warning(
            "trainer.precision=%s on CPU: mixed precision is usually much slower than 32-true "
            "on CPUs without native bf16/fp16 (see docs/benchmarks.md)",
            precision,
        )
