"""Run names: a run's overrides as its sweep-job folder and TensorBoard run name (the
``inat.run_name`` resolver of ``conf/``: :mod:`inat_lightning.runs.resolvers`)."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from omegaconf import OmegaConf

from inat_lightning.runs.overrides import key_of, parse


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

    hc = HydraConfig.get()
    keys = set((hc.sweeper.get("params") or {}).keys())
    saved = Path(hc.sweep.dir) / "multirun.yaml"
    if saved.is_file():
        task = OmegaConf.load(saved).hydra.overrides.task
        keys |= {key_of(o) for o in parse(task) if o.is_sweep_override()}
    return keys


def run_name() -> str:
    """This run's command-line overrides as a name (see :func:`short_name`), the swept ones
    first in a multirun so that a long name keeps them; Hydra's excluded keys left out."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    excluded = set(hc.job.config.override_dirname.exclude_keys)
    items = sorted(
        (o for o in parse(hc.overrides.task) if key_of(o) not in excluded),
        key=lambda o: o.input_line,
    )
    if hc.mode == RunMode.MULTIRUN:
        swept = swept_keys()
        items = sorted(items, key=lambda o: key_of(o) not in swept)  # stable: swept first
    return short_name(",".join(_rounded(o.input_line) for o in items))


def _rounded(override: str) -> str:
    """``a.lr=0.010142997784304343`` → ``a.lr=0.01014`` (see :func:`round_sample`)."""
    head, eq, value = override.partition("=")
    return head + eq + round_sample(value)
