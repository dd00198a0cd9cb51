"""``make demo``: train on the embedded biased dataset, evaluate the best checkpoint, say what
the bias audit found and where to look next (the report, the Grad-CAM galleries, TensorBoard).

    python -m inat_lightning.demo [train overrides]      # = make demo ARGS="..."

The recipe is ``experiment=demo`` (``conf/experiment/demo.yaml``) unless the overrides name
another experiment; the evaluation audits with a ``layer2`` Finer-CAM (:data:`EVALUATE`).

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

from inat_lightning import __version__, run_files
from inat_lightning.analysis.report import audit_findings, discovery_findings
from inat_lightning.models.metric_names import headline
from inat_lightning.runs.overrides import quote

REPO = Path(__file__).resolve().parents[1]
RECIPE = "experiment=demo"
# the audit's CAM: 12x12 (layer2 at 96 px), explaining what tells a species from its look-alikes
# (Finer-CAM): the hand is what separates the cryptic twins, not what makes either a fish; and
# discovery, which never reads the generator's boxes, runs beside the audit that does
EVALUATE = ("cam.target_layer=layer2", "cam.score=finer", "audit.discover=true")


def run_dir_for(args: list[str]) -> Path:
    """The run folder: ``hydra.run.dir`` when given, else ``<root>/logs/demo/<timestamp>``."""
    for arg in args:
        if arg.startswith("hydra.run.dir="):
            return Path(arg.split("=", 1)[1].strip("'\""))
    root = Path(os.environ.get("INAT_LIGHTNING_ROOT", "."))
    return root / "logs" / "demo" / time.strftime("%Y-%m-%d_%H-%M-%S")


def command(script: str) -> list[str]:
    """How to run ``train.py`` or ``evaluate.py``: the clone's script, else (an installed
    package) the same entry point as a module."""
    if (REPO / script).is_file() and (REPO / "pyproject.toml").is_file():
        return [sys.executable, str(REPO / script)]
    return [sys.executable, "-m", "inat_lightning.cli", script.removesuffix(".py")]


def _run(script: str, *args: str) -> None:
    cmd = [*command(script), *args]
    done = subprocess.run(cmd, cwd=Path.cwd())
    if done.returncode != 0:
        sys.exit(done.returncode)


def next_steps(run: Path) -> list[tuple[str, Path | str]]:
    """What to look at after the demo, with paths that exist."""
    evaluated = run / "evaluate"
    galleries = sorted((evaluated / "gradcam" / "test").glob("epoch*"))
    return [
        ("the report", evaluated / run_files.REPORT),
        ("the Grad-CAM galleries", galleries[-1] if galleries else evaluated),
        ("TensorBoard", f"make tensorboard RUN={run}   (= .venv/bin/tensorboard --logdir {run})"),
    ]


def train_args(args: list[str]) -> list[str]:
    """The training overrides: the demo recipe first (unless another experiment is named), then
    the user's, without ``hydra.run.dir`` (the demo sets it)."""
    own = [a for a in args if not a.startswith("hydra.run.dir=")]
    named = any(a.lstrip("+~").startswith("experiment=") for a in own)
    return own if named else [RECIPE, *own]


HELP = f"""usage: inat-demo [OVERRIDES...]      (= make demo ARGS="OVERRIDES")

Train a species classifier on the embedded, deliberately biased dataset (generated on first use:
look-alike fish species, one of them usually photographed with an angler's hand), evaluate the
best checkpoint, say what the bias audit found, and where to look next (report, Grad-CAM
galleries, TensorBoard). About 3 minutes on 2 CPU cores.

OVERRIDES are train.py's Hydra overrides (key=value), applied after the recipe
`{RECIPE}` (conf/experiment/demo.yaml) unless one names another experiment, e.g.
  inat-demo trainer.max_epochs=5 seed=1
  inat-demo experiment=cpu_quick
  inat-demo hydra.run.dir=logs/my_demo         the run folder (default logs/demo/<time>)
The evaluation audits with: {" ".join(EVALUATE)}.
"""


def data_and_answers(found: dict) -> list[str]:
    """What the report says of the data and of answers beyond the pixels, a line each: the
    near-duplicate clusters, the place prior's gain and the fallback's coverage."""
    lines = []
    near = found.get("near_duplicates")
    if near:
        lines.append(
            f"Near-duplicates: {near['clusters']} clusters kept whole by the split "
            f"({near['test_photos_with_a_copy_in_train']} test photos with a copy in train)."
        )
    prior = found.get("place_prior")
    if prior:
        lines.append(
            f"Where and when: top-1 {prior['top1_vision']:.3f} from the photo alone, "
            f"{prior['top1_fused']:.3f} with the place prior ({prior['gain']:+.3f})."
        )
    coverage = found.get("coverage")
    if coverage:
        species, fallback = coverage["at_threshold"]
        lines.append(
            f"Unsure answers: at {coverage['threshold']:g}, species only answers "
            f"{species['coverage']:.0%} of the photos; falling back to genus or family, "
            f"{fallback['coverage']:.0%} (risk_coverage.png)."
        )
    return [*lines, ""] if lines else []


def discovered(found: dict) -> list[str]:
    """What discovery found without being told where the hand is, and how its regions overlap
    the generator's boxes (which only the measured audit and this comparison read)."""
    found = found.get("discovery")
    if found is None:
        return []
    suspected = discovery_findings(found)
    if not suspected:
        return ["Discovery (not told where the hand is): no suspected shortcut.", ""]
    lines = ["Discovery (not told where the hand is: the generator's boxes are not read):"]
    ranks = [r["rank"] for r in found["rows"] if r["verdict"]]
    for rank, line in zip(ranks, suspected, strict=True):
        lines.append(f"  {line}")
        hit = found["overlap_with_known_boxes"].get(f"discovered_{rank}")
        if hit:
            lines.append(
                f"    its regions overlap the generator's hand box (IoU >= 0.3) on "
                f"{hit['overlapping']:.0%} of its {hit['boxed_photos']} photos that have one"
            )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> Path | None:
    """Train with ``argv`` as overrides, evaluate the best checkpoint; returns the run folder
    (``None`` for ``--help``)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print(HELP)
        return None
    if "--version" in args:
        print(f"inat-lightning {__version__}")
        return None
    run = run_dir_for(args)
    _run("train.py", *train_args(args), f"hydra.run.dir={quote(run)}")
    summary = json.loads((run / run_files.METRICS).read_text())
    best = summary.get("best_checkpoint") or str(run / run_files.LAST_CHECKPOINT)
    evaluated = run / "evaluate"
    _run("evaluate.py", f"ckpt_path={quote(best)}", f"hydra.run.dir={quote(evaluated)}", *EVALUATE)
    metrics = summary["metrics"]
    results = ", ".join(f"{k} {metrics[k]:.3f}" for k in headline("test") if k in metrics)
    print(f"\ndemo done: {results} (chance {summary['chance_accuracy']:.3f}), in {run}\n")
    found = json.loads((evaluated / run_files.METRICS).read_text())
    for line in data_and_answers(found):
        print(line)
    for line in discovered(found):
        print(line)
    verdicts = audit_findings(found["audit"])
    if verdicts:
        print("Bias audit (does the model look at the species or at the angler's hand?):")
        print("\n".join(f"  {v}" for v in verdicts) + "\n")
    print("Look next:")
    for i, (what, where) in enumerate(next_steps(run), 1):
        print(f"  {i}. {what + ':':<25} {where}")
    return run


if __name__ == "__main__":
    main()
