"""Cue discovery on planted cues, over seeds: does it find the cue nobody told it about?

Per seed and kind, a model is trained and evaluated as a user would (``train.py`` then
``evaluate.py audit.discover=true``), and discovery's output is scored against the planted boxes
it never read:

* kinds ``petals``, ``scale_bar``, ``pin`` (and their control ``none``): real photos that
  scikit-learn and scikit-image ship, a cue planted on 70 % of one class's photos, which only the
  cue tells from its twin (:mod:`inat_lightning.data.planted`); ResNet18 at 64 px;
* kind ``tint``: the same, the cue a warm cast over the whole photo — no region: the limit;
* kind ``hand`` (and its control ``hand_none``, the same generator without the hand): ``make
  demo``'s embedded set and recipe.

Scores, like dcbench and Domino's: whether the top-ranked suspected shortcut of the cued class
is the planted cue (its regions overlap the planted boxes, IoU >= 0.3, on >= 70 % of its photos
that carry one);
suspected clusters on the controls (false alarms); precision-at-k of the suspected regions in
rank order against a simpler baseline (each photo's CAM peak region, the photos the model calls
the cued class most confidently first — what a person paging through overlays sees); and the
cost, discovery's seconds over the measured audit's on the same test split.

    python -m bench.bench_discover [--seeds 0 1 2 3 4] [--kinds petals scale_bar pin none]
    python -m bench.bench_discover --kinds hand hand_none --keep runs/   # then, after a change:
    python -m bench.bench_discover --kinds hand hand_none --keep runs/ --again
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from bench.common import report
from inat_lightning.data.planted import CUED, KINDS, make_planted
from inat_lightning.demo import EVALUATE as DEMO_EVALUATE

REPO = Path(__file__).resolve().parents[1]
HAND = "Piscis striatus"
K = 10  # precision at k
PER_CLASS = 160
MIN_IOU, MIN_OVERLAP = 0.3, 0.7
PLANTED_TRAIN = (
    "data=imagefolder", "model=resnet18", "data.image_size=64", "data.crop_ratio=1.0",
    "data.crop_scale=[0.9,1.0]", "data.batch_size=16", "trainer.max_epochs=8",
    "model.optimizer.lr=0.02", "callbacks=[model_checkpoint]",
    "data.split.ratios=[0.5,0.15,0.35]",  # a test split with enough photos of each class
)  # fmt: skip
EVALUATE = ("callbacks=none", "cam.target_layer=layer2", "cam.score=finer", "audit.discover=true")


def _run(args: list[str], env: dict | None = None) -> None:
    done = subprocess.run(
        [sys.executable, *args], cwd=REPO, env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"{args[:2]} failed: {done.stderr[-2000:]}")


def evaluate_again(kind: str, seed: int, tmp: Path) -> tuple[Path, Path]:
    """The model of one kind and seed, trained before in ``tmp``, evaluated again (into
    ``<run>/reevaluate``): a change to discovery measured on the same models."""
    run = tmp / f"{kind}-{seed}"
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    again = run / "reevaluate"
    shutil.rmtree(again, ignore_errors=True)
    if kind.startswith("hand"):
        home = tmp / f"{kind}-{seed}-home"
        args = ["evaluate.py", f"ckpt_path={best}", *DEMO_EVALUATE, f"hydra.run.dir={again}"]
        _run(args, {"INAT_LIGHTNING_ROOT": str(home)})
        return again, next((home / "data").glob("synthetic*"))
    _run(["evaluate.py", f"ckpt_path={best}", *EVALUATE, f"hydra.run.dir={again}"])
    return again, tmp / f"data-{kind}-{seed}"


def train_and_evaluate(kind: str, seed: int, tmp: Path) -> tuple[Path, Path]:
    """The evaluation folder and the data root of one kind and seed."""
    run = tmp / f"{kind}-{seed}"
    if kind.startswith("hand"):
        args = ["-m", "inat_lightning.demo", f"seed={seed}", f"hydra.run.dir={run}"]
        if kind == "hand_none":
            args.append("data.synthetic.cue_species=null")
        home = tmp / f"{kind}-{seed}-home"  # its data/ (the generated set) and logs/
        _run(args, {"INAT_LIGHTNING_ROOT": str(home)})
        root = next((home / "data").glob("synthetic*"))
        return run / "evaluate", root
    root = make_planted(tmp / f"data-{kind}-{seed}", kind, seed=seed, per_class=PER_CLASS)
    _run(["train.py", *PLANTED_TRAIN, f"data.root={root}", f"seed={seed}", f"hydra.run.dir={run}"])
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    _run(["evaluate.py", f"ckpt_path={best}", *EVALUATE, f"hydra.run.dir={run / 'evaluate'}"])
    return run / "evaluate", root


def planted_boxes(root: Path) -> dict[str, tuple]:
    from inat_lightning.data.manifest import MANIFEST_NAME, read_manifest

    return {r.photo_id: r.cue_box for r in read_manifest(root / MANIFEST_NAME) if r.cue_box}


def precision_at_k(regions: list[tuple[str, tuple]], truth: dict[str, tuple]) -> float:
    """Share of the first ``K`` regions (photo id, box) that overlap a planted box; missing
    regions count as misses."""
    from inat_lightning.analysis.discover import iou

    hits = [pid in truth and iou(box, truth[pid]) >= MIN_IOU for pid, box in regions[:K]]
    return sum(hits) / K


def baseline_regions(evaluated: Path, root: Path, cued: str) -> list[tuple[str, tuple]]:
    """Each test photo the model calls ``cued``: its CAM peak region (no clustering), most
    confident first, in the photo's pixels."""
    import torch

    from inat_lightning.analysis.discover import DiscoverConfig, Discovery, box_in_photo
    from inat_lightning.analysis.gradcam import CamSetting, compute_cams
    from inat_lightning.analysis.infer import forward
    from inat_lightning.data.dataset import load_readable
    from inat_lightning.data.manifest import DEFAULT_MAX_PIXELS, MANIFEST_NAME, read_manifest
    from inat_lightning.models.checkpoint import checked_spec, load_classifier

    metrics = json.loads((evaluated / "metrics.json").read_text())
    model = load_classifier(metrics["checkpoint"], "ckpt")
    spec = checked_spec(model, {})
    with (evaluated / "splits.csv").open(newline="") as f:
        test = {r["path"] for r in csv.DictReader(f) if r["split"] == "test"}
    records = [r for r in read_manifest(root / MANIFEST_NAME) if r.path in test]
    kept, photos, _ = load_readable(root, records, DEFAULT_MAX_PIXELS)
    cfg = DiscoverConfig(
        proposals_per_photo=1, cam=CamSetting(target_layer="layer2", score="finer")
    )
    found = Discovery(cfg, spec)
    net = model.net.eval()
    x = found._tensor(photos)
    with torch.no_grad():
        probs = forward(net, x, 32)
    c = model.class_names.index(cued)
    chosen = [i for i in np.argsort(-probs[:, c]) if probs[i].argmax() == c]
    cams = compute_cams(net, x[chosen], [c] * len(chosen), cfg.cam, 32)
    first = {p.photo: p.box for p in reversed(found.propose(cams))}
    return [
        (kept[i].photo_id, box_in_photo(first[j], photos[i], spec))
        for j, i in enumerate(chosen)
        if j in first
    ]


def held_back_by_look(rows: list[dict]) -> list[dict]:
    """The clusters that pass every other condition of the verdict but whose look does not tell
    the photos it is on from the look-alike's (``audit.discovery.min_separation``): what that
    condition holds back, with their evidence."""
    from inat_lightning.analysis.discover import SUSPECTED, DiscoverConfig, DiscoveredCue, verdict

    cfg = DiscoverConfig(min_separation=0.0)
    out = []
    for r in rows:
        cue = DiscoveredCue(**{("class_" if k == "class" else k): v for k, v in r.items()})
        if not r["verdict"] and verdict(cue, cfg) == SUSPECTED:
            keys = ("class", "presence_gap", "acc_drop", "transplant_flip", "look_separation")
            out.append({k: round(r[k], 2) if isinstance(r[k], float) else r[k] for k in keys})
    return out


def score(kind: str, seed: int, evaluated: Path, root: Path) -> dict:
    """One run's scores (see the module doc)."""
    found = json.loads((evaluated / "metrics.json").read_text())
    audit, discovery = found["audit"], found["discovery"]
    cued = HAND if kind.startswith("hand") else CUED
    rows = discovery["rows"]
    suspected = [r for r in rows if r["verdict"]]
    out = {
        "kind": kind, "seed": seed, "test_acc": round(found["metrics"]["test/acc"], 3),
        "suspected": len(suspected), "held_back_by_look": held_back_by_look(rows),
        "cost_ratio": round(discovery["seconds"] / audit["seconds"], 2),
    }  # fmt: skip
    if kind in ("none", "hand_none"):
        return out
    from inat_lightning.analysis.discover import agreement
    from inat_lightning.data.manifest import MANIFEST_NAME, read_manifest

    truth = planted_boxes(root)
    top = next((r for r in suspected if r["class"] == cued), None)
    with (evaluated / "discovered_boxes.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    overlaps = agreement(rows, read_manifest(root / MANIFEST_NAME), MIN_IOU)
    overlap = overlaps.get(f"discovered_{top['rank']}") if top else None
    boxes = [(r["photo_id"], tuple(float(r[k]) for k in ("x0", "y0", "x1", "y1"))) for r in rows]
    out |= {
        "top_is_planted": bool(overlap and overlap["overlapping"] >= MIN_OVERLAP),
        "top_rank": top["rank"] if top else None,
        "top_separation": (
            round(top["look_separation"], 2) if top and top["look_separation"] is not None else None
        ),
        "top_overlap": round(overlap["overlapping"], 2) if overlap else None,
        "top_centred": round(overlap["centred"], 2) if overlap else None,
        f"precision_at_{K}": precision_at_k(boxes, truth),
        f"baseline_precision_at_{K}": precision_at_k(
            baseline_regions(evaluated, root, cued), truth
        ),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    kinds = [*KINDS, "hand", "hand_none"]
    parser.add_argument("--kinds", nargs="+", choices=kinds, default=list(KINDS))
    parser.add_argument("--keep", type=Path, help="keep the runs in this folder")
    parser.add_argument(
        "--again", action="store_true",
        help="with --keep: evaluate the runs trained there before again, not training them",
    )  # fmt: skip
    a = parser.parse_args()
    if a.again and not a.keep:
        parser.error("--again needs --keep (the folder of the runs trained before)")
    step = evaluate_again if a.again else train_and_evaluate
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        where = a.keep or Path(tmp)
        for kind in a.kinds:
            for seed in a.seeds:
                evaluated, root = step(kind, seed, where)
                runs.append(score(kind, seed, evaluated, root))
                print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    summary = {}
    for kind in a.kinds:
        mine = [r for r in runs if r["kind"] == kind]
        line = {"seeds": len(mine), "cost_ratio_max": max(r["cost_ratio"] for r in mine)}
        if kind in ("none", "hand_none"):
            line["seeds_with_a_false_alarm"] = sum(r["suspected"] > 0 for r in mine)
            line["seeds_held_back_by_look"] = sum(bool(r["held_back_by_look"]) for r in mine)
        else:
            line["top_is_planted"] = sum(r["top_is_planted"] for r in mine)
            for key in (f"precision_at_{K}", f"baseline_precision_at_{K}"):
                line[key] = round(float(np.mean([r[key] for r in mine])), 2)
        summary[kind] = line
    report("discover", {"summary": summary, "runs": runs})


if __name__ == "__main__":
    main()
