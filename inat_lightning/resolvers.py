"""OmegaConf resolvers used by ``conf/`` (registered when :mod:`inat_lightning` is imported)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf


def short_name(text: str, max_len: int = 140) -> str:
    """A run's overrides (``a.b=1,c.d=x``) as one folder / TensorBoard run name.

    ``/`` becomes ``_``. Too long, the keys are cut to their last part (``b=1,d=x``); still too
    long, the name is cut and ends with a hash of the whole, so names stay unique and under
    file-name limits (255 bytes)."""
    name = str(text).replace("/", "_")
    if len(name) > max_len:
        name = re.sub(r"(^|,)[+~]*(?:[\w-]+\.)+(?=[\w-]+=)", r"\1", name)
    if len(name) > max_len:
        digest = hashlib.sha1(str(text).encode()).hexdigest()[:8]
        name = f"{name[: max_len - 9]}~{digest}"
    return name


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def swept_keys() -> set[str]:
    """Keys a running multirun sweeps over: those with a sweep value in ``multirun.yaml``
    (``a=1,2``, ``range(...)``, …) and those searched by the sweeper (Optuna's ``params``)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.core.override_parser.overrides_parser import OverridesParser

    hc = HydraConfig.get()
    keys = set((hc.sweeper.get("params") or {}).keys())
    saved = Path(hc.sweep.dir) / "multirun.yaml"
    if saved.is_file():
        task = OmegaConf.load(saved).hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
        keys |= {o.key_or_group for o in parsed if o.is_sweep_override()}
    return keys


def run_name() -> str:
    """This run's command-line overrides as a name (see :func:`short_name`), the swept ones
    first in a multirun so that a long name keeps them; Hydra's excluded keys left out."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    excluded = set(hc.job.config.override_dirname.exclude_keys)
    items = sorted(o for o in hc.overrides.task if _key(o) not in excluded)
    if hc.mode == RunMode.MULTIRUN:
        swept = swept_keys()
        items = [o for o in items if _key(o) in swept] + [o for o in items if _key(o) not in swept]
    return short_name(",".join(map(_round, items)))


def _round(override: str) -> str:
    """``lr=0.010142997784304343`` (an Optuna sample) reads ``lr=0.01014``."""
    key, _, value = override.partition("=")
    try:
        number = float(value)
    except ValueError:
        return override
    return f"{key}={number:.4g}" if len(value) > 8 and "." in value else override


def register() -> None:
    OmegaConf.register_new_resolver("inat.run_name", run_name, replace=True)
