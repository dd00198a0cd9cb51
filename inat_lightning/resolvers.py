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


def override_key(override: str) -> str:
    """``+a.b=1`` -> ``a.b``: the config key a command-line override sets."""
    return override.split("=", 1)[0].lstrip("+~")


def round_sample(value: str) -> str:
    """A long float such as an Optuna sample (``0.010142997784304343``) to 4 significant
    digits (``0.01014``); any other value as given."""
    try:
        number = float(value)
    except ValueError:
        return value
    return f"{number:.4g}" if len(value) > 8 and "." in value else value


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
    items = sorted(o for o in hc.overrides.task if override_key(o) not in excluded)
    if hc.mode == RunMode.MULTIRUN:
        swept = swept_keys()
        items = sorted(items, key=lambda o: override_key(o) not in swept)  # stable: swept first
    rounded = (k + eq + round_sample(v) for k, eq, v in (o.partition("=") for o in items))
    return short_name(",".join(rounded))


def register() -> None:
    OmegaConf.register_new_resolver("inat.run_name", run_name, replace=True)
