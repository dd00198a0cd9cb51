"""The demo over several seeds: what accuracy a user will see, as mean ± spread, not one run.

Runs ``make demo``'s two steps (``python -m inat_lightning.demo seed=S``: train, then evaluate)
once per seed, each in its own folder under a temporary root, and reports test accuracy,
macro-F1 and wall time per seed and their mean, standard deviation, min and max.

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


def one_demo(seed: int, root: Path, extra: list[str]) -> dict:
    run = root / f"seed{seed}"
    cmd = [sys.executable, "-m", "inat_lightning.demo", f"seed={seed}", f"hydra.run.dir={run}"]
    env = {**os.environ, "INAT_LIGHTNING_ROOT": str(root)}
    t0 = time.perf_counter()
    subprocess.run([*cmd, *extra], check=True, env=env, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    metrics = json.loads((run / "metrics.json").read_text())["metrics"]
    return {
        "seed": seed,
        "test_acc": round(metrics["test/acc"], 4),
        "test_f1_macro": round(metrics["test/f1_macro"], 4),
        "seconds": round(seconds, 1),
    }


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
        },
    )


if __name__ == "__main__":
    main()
