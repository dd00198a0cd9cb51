"""Config checking: every bad value fails before any work, with a message naming its key."""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from lightning.pytorch.accelerators import CPUAccelerator
from omegaconf import DictConfig, OmegaConf

from inat_lightning.models.backbones import RESNET_DEPTHS
from inat_lightning.resume import resume_checkpoint

log = logging.getLogger(__name__)


OPTIMIZABLE = re.compile(
    r"^(train|val|test)/(loss|acc|acc_macro|top5|f1_macro|precision_macro|recall_macro)$"
    r"|^best/val/\w+$"
)


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the offending key."""


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that turns constructor errors into :class:`ConfigError`.

    A constructor error that starts with ``param=...`` becomes ``<full key>.param=...``, so the
    user reads ``data.split.ratios=[0.5, 0.6, 0.1]: must sum to 1``.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        match = re.search(r"full_key: (\S+)", str(e))
        where = match.group(1) if match else key
        cause = e.__cause__ or e
        msg = str(cause)
        raise ConfigError(f"{where}.{msg}" if re.match(r"^\w+=", msg) else f"{where}: {msg}") from e


def build_all(node: DictConfig | None, key: str) -> list[Any]:
    """Instantiate every ``_target_`` child of a group such as ``callbacks`` or ``logger``."""
    if not node:
        return []
    return [
        build(child, f"{key}.{name}")
        for name, child in node.items()
        if isinstance(child, DictConfig) and "_target_" in child
    ]


HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


def check_targets(cfg: DictConfig) -> None:
    """Strict keys: every ``_target_`` node may only hold arguments its target accepts (unless
    it takes ``**kwargs``), so a misspelt or unknown key fails before any work, named in full."""

    def walk(node: Any, path: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
            return
        if not isinstance(node, dict):
            return
        if "_target_" in node:
            _check_target(node, path)
        for k, v in node.items():
            walk(v, f"{path}.{k}" if path else str(k))

    walk(OmegaConf.to_container(cfg, resolve=False), "")


def _check_target(node: dict, path: str) -> None:
    try:
        target = get_object(str(node["_target_"]))
    except Exception as e:  # noqa: BLE001 - any import failure is the user's _target_ value
        raise ConfigError(f"{path}._target_={node['_target_']}: cannot import ({e})") from e
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(node) - HYDRA_KEYS - set(params))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(params), n=1)
        hint = f"did you mean {close[0]}?" if close else "accepted: " + ", ".join(params)
        raise ConfigError(f"{path}.{unknown[0]}: unknown key for {node['_target_']}; {hint}")


def _call(node: DictConfig, key: str, *args: Any) -> Any:
    """Build a ``_partial_`` node and call it with ``args``; its errors name ``key``."""
    try:
        return build(node, key)(*args)
    except (ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(f"{key} ({node._target_}): {e}") from e


def check_train_config(cfg: DictConfig) -> None:
    """Checks that need no instantiation of heavy objects: required values, the model
    section and the paths."""
    check_targets(cfg)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required (set on the command line, key=value)")
    metric = cfg.get("optimized_metric")
    if metric is not None and not OPTIMIZABLE.match(str(metric)):
        raise ConfigError(
            f"optimized_metric={metric}: must be <stage>/<metric> with stage train|val|test|best "
            "and metric loss|acc|acc_macro|top5|f1_macro|precision_macro|recall_macro"
        )
    model = cfg.model
    if model.depth not in RESNET_DEPTHS:
        raise ConfigError(f"model.depth={model.depth}: must be one of {RESNET_DEPTHS}")
    fine_tuning = "backbone_finetuning" in (cfg.get("callbacks") or {})
    if fine_tuning and not (model.get("weights_path") or model.get("weights")):
        raise ConfigError(
            "model.weights_path: required for fine-tuning (callbacks.backbone_finetuning), "
            "e.g. model.weights_path=weights/resnet101.pth"
        )
    if model.get("weights_path") and not Path(model.weights_path).is_file():
        raise ConfigError(f"model.weights_path={model.weights_path!r}: no such file")
    if not 0.0 <= model.label_smoothing < 1.0:
        raise ConfigError(f"model.label_smoothing={model.label_smoothing}: must be in [0, 1)")
    lr = model.optimizer.get("lr")
    if lr is not None and not lr > 0:
        raise ConfigError(f"model.optimizer.lr={lr}: must be > 0")
    # let the optimizer and scheduler check the rest of their own arguments, on a dummy parameter
    optimizer = _call(model.optimizer, "model.optimizer", [torch.zeros(1, requires_grad=True)])
    if model.get("scheduler"):
        _call(model.scheduler, "model.scheduler", optimizer)
    try:
        resume_checkpoint(cfg)
    except FileNotFoundError as e:
        raise ConfigError(str(e)) from e


def check_trainer(trainer: L.Trainer, cfg: DictConfig) -> None:
    """Checks that need the resolved accelerator; run before any data is touched."""
    on_cpu = isinstance(trainer.accelerator, CPUAccelerator)
    if on_cpu and cfg.trainer.get("sync_batchnorm"):
        raise ConfigError("trainer.sync_batchnorm=true: SyncBatchNorm needs GPUs; false on CPU")
    precision = str(cfg.trainer.get("precision", ""))
    if on_cpu and ("16" in precision):
        log.warning(
            "trainer.precision=%s on CPU: mixed precision is usually much slower than 32-true "
            "on CPUs without native bf16/fp16 (about 25x on the CI machine)",
            precision,
        )


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task from a Hydra entry point; a :class:`ConfigError` exits with status 2 and one
    clear line instead of a traceback."""
    try:
        return task(cfg)
    except ConfigError as e:
        log.error("config error: %s", e)
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
