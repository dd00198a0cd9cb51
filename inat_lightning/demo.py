"""``make demo``: train on the embedded dataset, evaluate the best checkpoint, and say where to
look next (the report, the Grad-CAM galleries, the TensorBoard command).

    python -m inat_lightning.demo [train overrides]      # = make demo ARGS="..."

Both steps are the real entry points (``train.py``, ``evaluate.py``), run one after the other
with this interpreter, so the demo is exactly what a user can type.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from inat_lightning.models.metrics import headline
from inat_lightning.runs.overrides import quote

REPO = Path(__file__).resolve().parents[1]


def run_dir_for(args: list[str]) -> Path:
    """The run folder: ``hydra.run.dir`` when given, else ``<root>/logs/demo/<timestamp>``."""
    for arg in args:
        if arg.startswith("hydra.run.dir="):
            return Path(arg.split("=", 1)[1].strip("'\""))
    root = Path(os.environ.get("INAT_LIGHTNING_ROOT", "."))
    return root / "logs" / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")


def _run(script: str, *args: str) -> None:
    cmd = [sys.executable, str(REPO / script), *args]
    done = subprocess.run(cmd, cwd=Path.cwd())
    if done.returncode != 0:
        sys.exit(done.returncode)


def next_steps(run: Path) -> list[tuple[str, Path | str]]:
    """What to look at after the demo, with paths that exist."""
    evaluated = run / "evaluate"
    galleries = sorted((evaluated / "gradcam" / "test").glob("epoch*"))
    return [
        ("the report", evaluated / "report.md"),
        ("the Grad-CAM galleries", galleries[-1] if galleries else evaluated),
        ("TensorBoard", f"make tensorboard RUN={run}   (= .venv/bin/tensorboard --logdir {run})"),
    ]


def main(argv: list[str] | None = None) -> Path:
    """Train with ``argv`` as overrides, evaluate the best checkpoint; returns the run folder."""
    args = list(sys.argv[1:] if argv is None else argv)
    run = run_dir_for(args)
    train_args = [a for a in args if not a.startswith("hydra.run.dir=")]
    _run("train.py", *train_args, f"hydra.run.dir={quote(run)}")
    summary = json.loads((run / "metrics.json").read_text())
    best = summary.get("best_checkpoint") or str(run / "checkpoints" / "last.ckpt")
    _run("evaluate.py", f"ckpt_path={quote(best)}", f"hydra.run.dir={quote(run / 'evaluate')}")
    metrics = summary["metrics"]
    results = ", ".join(f"{k} {metrics[k]:.3f}" for k in headline("test") if k in metrics)
    print(f"\ndemo done: {results} (chance {summary['chance_accuracy']:.3f}), in {run}\n")
    print("Look next:")
    for i, (what, where) in enumerate(next_steps(run), 1):
        print(f"  {i}. {what + ':':<25} {where}")
    return run


if __name__ == "__main__":
    main()
