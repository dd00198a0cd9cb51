"""The files a run folder holds, named once: the tasks write them, resume, the sweep summary,
the demo and ``evaluate.py`` read them (``conf/`` names ``splits.csv`` and ``last.ckpt`` too:
``tests/house/test_house.py`` holds them to these)."""

from __future__ import annotations

from pathlib import Path

#: the run's results: metrics, the best checkpoint, compute (written last: a run is finished)
METRICS = "metrics.json"
#: the evaluation report
REPORT = "report.md"
#: the split of every photo (what ``evaluate.py`` restores)
SPLITS = "splits.csv"
#: a search trial's number, state, value and parameters
TRIAL = "trial.json"
#: where a run keeps its checkpoints, and the one it resumes from
CHECKPOINTS = "checkpoints"
LAST_CHECKPOINT_NAME = "last.ckpt"
LAST_CHECKPOINT = Path(CHECKPOINTS) / LAST_CHECKPOINT_NAME
#: the overrides a run was started with, and its whole config (Hydra's)
SAVED_OVERRIDES = Path(".hydra") / "overrides.yaml"
SAVED_CONFIG = Path(".hydra") / "config.yaml"
