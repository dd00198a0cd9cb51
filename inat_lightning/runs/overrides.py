"""Command-line overrides, read with Hydra's own parser (quoting, ``+``/``~`` and sweeps as
Hydra reads them), for the run lifecycle: resume, run names, sweep summaries, evaluate."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override


def parse(overrides: Iterable[str]) -> list[Override]:
    """Parse ``key=value`` overrides (raises Hydra's ``OverrideParseException`` on bad ones)."""
    return OverridesParser.create().parse_overrides([str(o) for o in overrides])


def key_of(override: Override) -> str:
    """The config key (``a.b``) or group (``model``, ``hydra/launcher``) an override sets."""
    return override.key_or_group


def value_text(override: Override) -> str:
    """An override's value as written (without the key), e.g. ``0.01`` or ``[a,b]``."""
    return override.input_line.split("=", 1)[1] if "=" in (override.input_line or "") else ""


def quote(value: object) -> str:
    """A Hydra override value that may hold ``,``, ``=`` or spaces, quoted."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def task_overrides() -> list[Override]:
    """This Hydra run's command-line overrides; empty outside a Hydra run (a composed config)."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    return parse(HydraConfig.get().overrides.task)


def command_data_changes(cfg: Any) -> dict[str, Any]:
    """The ``data.*`` keys this command sets: its command line, then ``data_overrides``."""
    from omegaconf import OmegaConf

    changed = {
        key_of(o).removeprefix("data."): OmegaConf.select(cfg, key_of(o))
        for o in task_overrides()
        if key_of(o).startswith("data.") and not o.is_delete()
    }
    return changed | dict(cfg.get("data_overrides") or {})
