"""Cost of the evaluation at iNaturalist-scale class counts: K = 100, 1,000, 10,000 and 40,000
with a fixed number of validation photos. Per K, in a fresh process (its own peak RSS): the
metric state a classifier holds before any photo, the update + compute time of the stage metrics
and the sparse confusion over the photos (logits streamed in batches, as a validation epoch
does), the analysis time (per-class table, most-confused pairs, the confusion figure's block,
rank metrics) and the peak RSS. Ratios are to the 100-class row of the same run.

    python -m bench.bench_classes [--photos 20000] [--classes 100 1000 10000 40000]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from bench.common import report


def one(k: int, photos: int, batch: int = 256) -> dict:
    """The measures of one class count (run in its own process)."""
    from inat_lightning.analysis.figures import confusion_matrix_figure
    from inat_lightning.analysis.tables import most_confused_pairs, per_class_table
    from inat_lightning.data.taxonomy import Taxonomy
    from inat_lightning.models.confusion import ConfusionPairs, rank_scalars
    from inat_lightning.models.metrics import build_metrics
    from tests.models.test_class_scale import state_bytes

    torch.manual_seed(0)
    metrics, pairs = build_metrics(k), ConfusionPairs(k)
    held_before = state_bytes(metrics) + state_bytes(pairs)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for start in range(0, photos, batch):
        n = min(batch, photos - start)
        y = torch.randint(0, k, (n,), generator=g)
        logits = torch.randn(n, k, generator=g)
        logits[torch.arange(n), y] += 3.0  # mostly right, mistakes spread
        metrics.update(logits, y)
        pairs.update(logits, y)
    metrics.compute()
    confusion = pairs.compute()
    update_s = time.perf_counter() - t0
    held_after = state_bytes(metrics) + state_bytes(pairs)

    names = [f"Genus{i // 4} species{i}" for i in range(k)]
    lineages = {n: {"genus": n.split()[0], "family": f"F{i // 40}"} for i, n in enumerate(names)}
    taxonomy = Taxonomy(names, lineages)
    t0 = time.perf_counter()
    per_class_table(confusion, names)
    most_confused_pairs(confusion, names, 15, taxonomy)
    confusion_matrix_figure(confusion, names, 30, taxonomy=taxonomy)
    rank_scalars(confusion, taxonomy)
    analysis_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {
        "classes": k,
        "photos": photos,
        "state_bytes_before": held_before,
        "state_bytes_after": held_after,
        "update_compute_s": round(update_s, 2),
        "analysis_s": round(analysis_s, 2),
        "peak_rss_mb": round(peak / 1e6),
        "cells": int(len(confusion.count)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--photos", type=int, default=20_000)
    ap.add_argument("--classes", type=int, nargs="*", default=[100, 1000, 10_000, 40_000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a.photos)))
        return
    rows = []
    for k in a.classes:
        cmd = [
            sys.executable,
            "-m",
            "bench.bench_classes",
            "--one",
            str(k),
            "--photos",
            str(a.photos),
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    for r in rows:
        for name in ("update_compute_s", "analysis_s", "peak_rss_mb", "state_bytes_before"):
            r[f"{name}_ratio"] = round(r[name] / max(base[name], 1e-9), 2)
    report("classes", {"rows": rows, "dense_confusion_bytes_at_40000": 2 * 40_000**2 * 8})


if __name__ == "__main__":
    main()
