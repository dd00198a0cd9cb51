"""Config checking: every bad value fails before any work, with a message naming its key."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from inat_lightning.models.backbones import RESNET_DEPTHS
from inat_lightning.resume import resume_checkpoint

log = logging.getLogger(__name__)


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
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"{', '.join(missing)}: required (set on the command line, key=value)")
    model = cfg.model
    if model.depth not in RESNET_DEPTHS:
        raise ConfigError(f"model.depth={model.depth}: must be one of {RESNET_DEPTHS}")
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


def run_cli(task: Callable[[DictConfig], Any], cfg: DictConfig) -> Any:
    """Run a task from a Hydra entry point; a :class:`ConfigError` exits with status 2 and one
    clear line instead of a traceback."""
    try:
        return task(cfg)
    except ConfigError as e:
        log.error("config error: %s", e)
        print(f"config error: {e}", file=sys.stderr)
        sys.exit(2)
