"""The cue-box command: import or detect cue boxes into a dataset's manifest, and report the
dataset's bias before any training. It wires the data room (the manifest's ``cue_*`` columns)
to the analysis room (detectors, the bias report), so it lives above both.

    python -m inat_lightning.cues report data/inat
    python -m inat_lightning.cues import-csv data/inat boxes.csv
    python -m inat_lightning.cues import-coco data/inat instances.json --labels person hand
    python -m inat_lightning.cues detect data/inat --detector opencv
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from inat_lightning.analysis.data_bias import dataset_report, report_markdown
from inat_lightning.analysis.detect import build_detector
from inat_lightning.data.cues import detect, import_coco, import_csv
from inat_lightning.data.manifest import MANIFEST_NAME, read_manifest


def main(argv: Sequence[str] | None = None) -> None:
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
    a = ap.parse_args(argv)
    root = Path(a.root)
    if not (root / MANIFEST_NAME).is_file():
        ap.error(f"{root}: no {MANIFEST_NAME} (scrape.py writes one)")
    try:
        if a.command == "import-csv":
            print(f"{import_csv(root, a.file)} photos got a cue box -> {root / MANIFEST_NAME}")
        elif a.command == "import-coco":
            print(f"{import_coco(root, a.file, a.labels)} photos got a cue box")
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


if __name__ == "__main__":
    main()
