"""Hydra glue shared by every task: build ``_target_`` nodes, strict keys, and one way to report
a bad value (:class:`ConfigError`, naming its key, before any work). Constructors state their
own rules with :func:`inat_lightning.validation.require`; errors that start with ``param=`` are
prefixed here with the config node's key."""

from __future__ import annotations

import difflib
import inspect
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}
#: the project's config folder, inside the package so that an installed wheel carries it (the
#: tasks' ``config_path``; the clone's ``conf/`` links to it); with a user's ``--config-dir``,
#: the only places a group choice saved in a run folder may point into
CONF = Path(__file__).resolve().parent / "conf"


class ConfigError(ValueError):
    """A config value is wrong; the message starts with the offending key."""


def _keyed(where: str, msg: str) -> str:
    """``where.param=…`` when a message starts with ``param=``, else ``where: message``."""
    return f"{where}.{msg}" if re.match(r"^\w+=", msg) else f"{where}: {msg}"


def build(node: DictConfig, key: str, **kwargs: Any) -> Any:
    """``hydra.utils.instantiate`` that turns constructor errors into :class:`ConfigError`.

    A constructor error that starts with ``param=...`` becomes ``<full key>.param=...``, so the
    user reads ``data.split.ratios=[0.5, 0.6, 0.1]: must sum to 1``.
    """
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        match = re.search(r"full_key: (\S+)", str(e))
        raise ConfigError(_keyed(match.group(1) if match else key, str(e.__cause__ or e))) from e


def build_all(node: DictConfig | None, key: str) -> list[Any]:
    """Instantiate every ``_target_`` child of a group such as ``callbacks`` or ``logger``."""
    if not node:
        return []
    return [
        build(child, f"{key}.{name}")
        for name, child in node.items()
        if isinstance(child, DictConfig) and "_target_" in child
    ]


def build_with(node: DictConfig, key: str, available: Mapping[str, Any]) -> Any:
    """:func:`build`, passing the run-time objects of ``available`` (an API client, the class
    names…) that the ``_target_`` accepts, so targets with different needs share one group."""
    params = _parameters(get_object(str(node._target_))) or {}
    return build(node, key, **{k: v for k, v in available.items() if k in params})


def call_partial(node: DictConfig, key: str, *args: Any) -> Any:
    """Build a ``_partial_`` node and call it with ``args`` (an optimizer on a dummy parameter):
    the target checks its own arguments; its errors name ``key``."""
    try:
        return build(node, key)(*args)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{key} ({node._target_}): {e}") from e


def check_args(check: Callable[..., Any], node: DictConfig, key: str) -> None:
    """Run a constructor's own argument check on a config node, without building anything
    heavy: ``check`` is called with the node's values it accepts (the others keep their
    defaults), and its ``ValueError``/``FileNotFoundError`` becomes a :class:`ConfigError`."""
    params = _parameters(check) or {}
    values = {k: v for k, v in node.items() if k in params and not isinstance(v, DictConfig)}
    try:
        check(**values)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(_keyed(key, str(e))) from e


def _parameters(target: Any) -> Mapping[str, inspect.Parameter] | None:
    try:
        return inspect.signature(target).parameters
    except (TypeError, ValueError):  # some builtins have no signature
        return None


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
    params = _parameters(target)
    if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(node) - HYDRA_KEYS - set(params))
    if unknown:
        close = difflib.get_close_matches(unknown[0], list(params), n=1)
        hint = f"did you mean {close[0]}?" if close else "accepted: " + ", ".join(params)
        raise ConfigError(f"{path}.{unknown[0]}: unknown key for {node['_target_']}; {hint}")


def run_cli(task: Callable[[Any], Any], cfg: Any) -> Any:
    """Run a task (or any step of an entry point) on its input; a :class:`ConfigError` exits
    with status 2 and one clear line instead of a traceback."""
    try:
        return task(cfg)
    except ConfigError as e:
        if logging.getLogger().handlers:  # into the run's log file too (not before Hydra's)
            log.error("config error: %s", e)
        print(f"config error: {e}", file=sys.stderr)
        if os.environ.get("SUBMITIT_EXECUTOR"):  # a Slurm job of a sweep: submitit reports
            raise  # an exception to the launcher at once (an exit leaves it waiting for output)
        sys.exit(2)
