"""The cue-box command: import or detect cue boxes into a dataset's manifest, and report the
dataset's bias before any training. It wires the data room (the manifest's ``cue_*`` columns)
to the analysis room (detectors, the bias report), so it lives above both.

    python -m inat_lightning.cues report data/inat
    python -m inat_lightning.cues import-csv data/inat boxes.csv
    python -m inat_lightning.cues import-coco data/inat instances.json --labels person hand
    python -m inat_lightning.cues detect data/inat --detector opencv
    python -m inat_lightning.cues discover data/inat logs/train/runs/<run>/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from inat_lightning.analysis.data_bias import dataset_report, report_markdown
from inat_lightning.analysis.detect import build_detector
from inat_lightning.analysis.report import discovery_findings
from inat_lightning.data.cues import detect, import_coco, import_csv
from inat_lightning.data.manifest import MANIFEST_NAME, read_manifest
from inat_lightning.data.split import SPLITS, read_splits
from inat_lightning.run_files import SPLITS as SPLITS_FILE


def parser() -> argparse.ArgumentParser:
    """The command line: one sub-command per way to get (or find) cue boxes, and the report."""
    ap = argparse.ArgumentParser(
        prog="python -m inat_lightning.cues",
        description="Cue boxes for a dataset root, and its bias report.",
    )
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("report", help="per class: cue share and area, observers")
    p.add_argument("root")
    p = sub.add_parser("import-csv", help="boxes from photo_id,x0,y0,x1,y1,label rows")
    p.add_argument("root")
    p.add_argument("file")
    p = sub.add_parser("import-coco", help="boxes from a COCO JSON file")
    p.add_argument("root")
    p.add_argument("file")
    p.add_argument("--labels", nargs="*", help="categories to keep (default: all)")
    p = sub.add_parser("detect", help="boxes from a detector")
    p.add_argument("root")
    p.add_argument(
        "--detector", default="opencv", help="a registered detector: opencv (default), torchvision…"
    )
    p.add_argument("--labels", nargs="*", default=["person"], help="torchvision: COCO classes")
    p.add_argument("--weights-path", help="torchvision: a local state dict (no download)")
    p.add_argument(
        "--image-size",
        type=int,
        default=800,
        help="torchvision: the short side photos are resized to (default 800; smaller is faster "
        "and misses smaller cues)",
    )
    p.add_argument("--overwrite", action="store_true", help="also photos that have a box")
    p = sub.add_parser(
        "discover",
        help="find cues nobody boxed: regions the model's CAMs share across one class's photos",
    )
    p.add_argument("root")
    p.add_argument("ckpt", help="a checkpoint of train.py (tensors only; read on the CPU)")
    p.add_argument("--out", default="discovered", help="folder for the CSVs and the picture")
    p.add_argument("--max-classes", type=int, default=30, help="the most photographed first")
    p.add_argument("--max-photos-per-class", type=int, default=40)
    p.add_argument("--target-layer", default="layer3", help="the CAM's layer (cam.target_layer)")
    p.add_argument("--score", default="class", help="what the CAM explains: class | finer")
    p.add_argument(
        "--splits",
        help="a run's splits.csv: only --split's photos are examined (default: the one in the "
        "checkpoint's run folder, when there). On photos it trained on, a model is right "
        "whatever it relies on, and the presence gap shows nothing",
    )
    p.add_argument("--split", default="test", choices=SPLITS, help="default: test")
    return ap


def main(argv: Sequence[str] | None = None) -> None:
    ap = parser()
    a = ap.parse_args(argv)
    root = Path(a.root)
    if not (root / MANIFEST_NAME).is_file():
        ap.error(f"{root}: no {MANIFEST_NAME} (scrape.py writes one)")
    try:
        if a.command == "import-csv":
            print(f"{import_csv(root, a.file)} photos got a cue box -> {root / MANIFEST_NAME}")
        elif a.command == "import-coco":
            print(f"{import_coco(root, a.file, a.labels)} photos got a cue box")
        elif a.command == "discover":
            run_discovery(root, a)
        elif a.command == "detect":
            options = {
                "labels": tuple(a.labels),
                "weights_path": a.weights_path,
                "image_size": a.image_size,
                **({"weights": None} if a.weights_path else {}),
            }
            print(f"{detect(root, build_detector(a.detector, **options))} photos got a cue box")
        else:
            text = "\n".join(
                [
                    "# Dataset report",
                    "",
                    *report_markdown(dataset_report(read_manifest(root / MANIFEST_NAME))),
                ]
            )
            (root / "dataset_report.md").write_text(text, encoding="utf-8")
            print(text)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        ap.exit(2, f"error: {e}\n")


def held_out(records: list, a: argparse.Namespace) -> list:
    """The records of ``--split`` in ``--splits`` (or the checkpoint's run folder's
    ``splits.csv``); all of them, said, when there is none."""
    splits = Path(a.splits) if a.splits else Path(a.ckpt).resolve().parents[1] / SPLITS_FILE
    if not splits.is_file():
        if a.splits:
            raise FileNotFoundError(f"--splits {splits}: no such file")
        print(
            f"no {SPLITS_FILE} beside the checkpoint: every photo is examined, also those the "
            "model trained on (on which it is right whatever it relies on): pass --splits"
        )
        return records
    chosen = read_splits(splits)
    print(f"the {a.split} photos of {splits}")
    return [r for r in records if chosen.get(r.path) == a.split]


def run_discovery(root: Path, a: argparse.Namespace) -> None:
    """``discover``: the checkpoint's classes' photos in the manifest, examined on the CPU; the
    suspected shortcuts printed, and how to turn their boxes into a measured audit."""
    from inat_lightning.analysis.discover import DiscoverConfig, discover_split
    from inat_lightning.analysis.gradcam import CamSetting
    from inat_lightning.data.manifest import DEFAULT_MAX_PIXELS
    from inat_lightning.models.checkpoint import checked_spec, load_classifier

    model = load_classifier(a.ckpt, "ckpt")
    spec = checked_spec(model, {})
    cfg = DiscoverConfig(
        max_classes=a.max_classes,
        max_photos_per_class=a.max_photos_per_class,
        cam=CamSetting(target_layer=a.target_layer, score=a.score),
    )
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records = held_out(read_manifest(root / MANIFEST_NAME), a)
    found = discover_split(
        model.net.eval(), root, records, model.class_names, spec, cfg, out, DEFAULT_MAX_PIXELS
    )
    suspected = [r for r in found["rows"] if r["verdict"]]
    print(
        f"{found['examined_photos']} photos of {found['examined_classes']} classes examined: "
        f"{len(found['rows'])} recurring regions, {len(suspected)} suspected shortcuts -> {out}"
    )
    for line in discovery_findings(found):
        print(f"  {line}")
    if suspected:
        boxes = out / "discovered_boxes.csv"
        print(f"measure them: python -m inat_lightning.cues import-csv {root} {boxes}")


if __name__ == "__main__":
    main()
