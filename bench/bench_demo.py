"""The demo over several seeds: what a user will see, as mean ± spread, not one run.

Runs ``make demo``'s two steps (``python -m inat_lightning.demo seed=S``: train, then evaluate)
once per seed, each in its own folder under a temporary root, and reports test accuracy,
macro-F1 and wall time per seed and their mean, standard deviation, min and max, and the bias
audit's row for the cued species (verdict, accuracy drop beyond the hole control, CAM energy
lift, flip rates): the demo must flag it on every seed, for the right reason.

    python -m bench.bench_demo [--seeds 0 1 2] [-- extra overrides]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import report

CUED = "Piscis striatus"  # the species the biased embedded set gives the angler's hand
AUDIT_KEYS = (
    "cued_images",
    "energy_lift",
    "acc_with_cue",
    "acc_drop",
    "acc_drop_redrawn",
    "flip_rate_cue_added",
    "lookalike",
    "flip_rate_lookalike",
    "verdict",
)


def one_demo(seed: int, root: Path, extra: list[str]) -> dict:
    run = root / f"seed{seed}"
    cmd = [sys.executable, "-m", "inat_lightning.demo", f"seed={seed}", f"hydra.run.dir={run}"]
    env = {**os.environ, "INAT_LIGHTNING_ROOT": str(root)}
    t0 = time.perf_counter()
    subprocess.run([*cmd, *extra], check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    audit = json.loads((run / "evaluate" / "metrics.json").read_text()).get("audit") or {}
    rows = [r for r in audit.get("rows", []) if r["class"] == CUED]
    return {
        "seed": seed,
        "test_acc": round(metrics["test/acc"], 4),
        "test_f1_macro": round(metrics["test/f1_macro"], 4),
        "seconds": round(seconds, 1),
        "audit": {k: _round(v) for k, v in rows[0].items() if k in AUDIT_KEYS} if rows else None,
    }


def _round(value):
    return round(value, 3) if isinstance(value, float) else value


def spread(values: list[float]) -> dict:
    return {
        "mean": round(statistics.mean(values), 4),
        "std": round(statistics.stdev(values), 4) if len(values) > 1 else 0.0,
        "min": min(values),
        "max": max(values),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("extra", nargs="*", help="more overrides for every demo run")
    a = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        runs = [one_demo(s, Path(tmp), a.extra) for s in a.seeds]
    report(
        "demo",
        {
            "runs": runs,
            "test_acc": spread([r["test_acc"] for r in runs]),
            "test_f1_macro": spread([r["test_f1_macro"] for r in runs]),
            "seconds": spread([r["seconds"] for r in runs]),
            "flagged": sum(
                bool(r["audit"]) and r["audit"]["verdict"] == "RELIES ON THE CUE" for r in runs
            ),
        },
    )


if __name__ == "__main__":
    main()
