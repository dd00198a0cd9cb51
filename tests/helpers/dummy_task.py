"""A stand-in for ``train.py`` in sweeper tests: the project's configs, overrides and Hydra
plugins (sweeper, summary callback), but a task that trains nothing. It writes a
``metrics.json`` whose ``val/f1_macro`` is a known function of the parameters and returns it,
so the sweeper's bookkeeping (resume, surplus trials, heartbeats, states) is tested in seconds.

``DUMMY_TASK_SECONDS`` (environment) makes each job last that long (a trial to kill mid-way);
``DUMMY_TASK_SELF_KILL=1`` makes each job kill itself with SIGKILL (a job that dies without a
word, as one killed for memory does)."""

from __future__ import annotations

import json
import math
import os
import signal
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

CONF = str(Path(__file__).resolve().parents[2] / "conf")


def score(cfg: DictConfig) -> float:
    """Best (1.0) at lr = 0.01, falling with the log-distance from it."""
    return 1.0 / (1.0 + abs(math.log10(float(cfg.model.optimizer.lr)) + 2.0))


@hydra.main(config_path=CONF, config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float:
    time.sleep(float(os.environ.get("DUMMY_TASK_SECONDS", "0")))
    if os.environ.get("DUMMY_TASK_SELF_KILL") == "1":
        os.kill(os.getpid(), signal.SIGKILL)
    value = score(cfg)
    out = Path(HydraConfig.get().runtime.output_dir) / "metrics.json"
    out.write_text(json.dumps({"metrics": {"val/f1_macro": value}}))
    return value


if __name__ == "__main__":
    main()
