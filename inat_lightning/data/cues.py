"""Cue boxes for real data, and the dataset's bias before any training.

* :func:`import_csv` / :func:`import_coco` read the boxes labelling tools export — a plain CSV
  ``photo_id,x0,y0,x1,y1,label`` or COCO JSON — into the manifest's ``cue_*`` columns;
* :func:`detect` fills them with a detector (:mod:`inat_lightning.analysis.detect`);
* :func:`dataset_report` says, per class, how many photos show the cue, how much of the photo it
  covers, and how many observers took them: the class whose photos are 60 % anglers is visible
  before a model is trained.

The manifest holds one box per photo: several boxes of a photo are merged into the box that
encloses them. The manifest is rewritten atomically, the previous one kept as
``manifest.csv.bak``; only the ``cue_*`` columns change.

    python -m inat_lightning.data.cues report data/inat
    python -m inat_lightning.data.cues import-csv data/inat boxes.csv
    python -m inat_lightning.data.cues import-coco data/inat instances.json --labels person hand
    python -m inat_lightning.data.cues detect data/inat --detector opencv
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from inat_lightning.data.dataset import DEFAULT_MAX_PIXELS, load_rgb
from inat_lightning.data.manifest import MANIFEST_NAME, Record, read_manifest, write_manifest
from inat_lightning.progress import progress

Box = tuple[float, float, float, float]


def _merged(boxes: Sequence[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def _checked(box: Box, r: Record, where: str) -> Box:
    """A box inside its photo (``x0 < x1``, ``y0 < y1``, within width and height when the
    manifest knows them), else a ``ValueError`` naming ``where``."""
    x0, y0, x1, y1 = box
    w, h = r.width or float("inf"), r.height or float("inf")
    if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
        raise ValueError(
            f"{where}: box {list(box)} of photo {r.photo_id} is out of bounds "
            f"(image {r.width}x{r.height}; need 0 <= x0 < x1 <= width, 0 <= y0 < y1 <= height)"
        )
    return box


def apply_boxes(
    root: Path, found: dict[str, list[tuple[Box, str, float | None]]], source: str
) -> int:
    """Write merged boxes (photo id → boxes with label and score) into ``root``'s manifest
    (backup kept); returns how many photos got a box."""
    manifest = Path(root) / MANIFEST_NAME
    records = read_manifest(manifest)
    for r in records:
        if r.photo_id in found:
            boxes = found[r.photo_id]
            r.cue_x0, r.cue_y0, r.cue_x1, r.cue_y1 = _merged([b for b, _, _ in boxes])
            r.cue_label = "+".join(dict.fromkeys(label for _, label, _ in boxes))
            scores = [s for _, _, s in boxes if s is not None]
            r.cue_score = max(scores) if scores else None
            r.cue_source = source
    shutil.copy2(manifest, manifest.with_name(MANIFEST_NAME + ".bak"))
    write_manifest(manifest, records)
    return len(found)


def _unknown(names: Iterable[str], where: str) -> None:
    names = sorted(set(names))
    if names:
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        raise ValueError(f"{where}: {len(names)} photos not in the manifest: {shown}")


def import_csv(root: str | Path, path: str | Path) -> int:
    """Boxes from ``photo_id,x0,y0,x1,y1,label`` rows (a header row) into the manifest."""
    root, path = Path(root), Path(path)
    by_id = {r.photo_id: r for r in read_manifest(root / MANIFEST_NAME)}
    found: dict[str, list] = defaultdict(list)
    missing = []
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        need = {"photo_id", "x0", "y0", "x1", "y1"}
        if not need <= set(reader.fieldnames or []):
            raise ValueError(f"{path}: needs columns photo_id,x0,y0,x1,y1[,label]")
        for row in reader:
            where = f"{path}: line {reader.line_num}"
            r = by_id.get(row["photo_id"])
            if r is None:
                missing.append(row["photo_id"])
                continue
            try:
                box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from e
            found[r.photo_id].append((_checked(box, r, where), row.get("label") or "cue", None))
    _unknown(missing, str(path))
    return apply_boxes(root, found, f"csv:{path.name}")


def import_coco(root: str | Path, path: str | Path, labels: Sequence[str] | None = None) -> int:
    """Boxes from a COCO JSON file (``images``, ``annotations`` with ``bbox = [x, y, w, h]``,
    ``categories``) into the manifest, keeping only ``labels`` when given. An image is matched
    to a manifest row by its path, its file name, or its stem as the photo id."""
    root, path = Path(root), Path(path)
    coco = json.loads(path.read_text(encoding="utf-8"))
    records = read_manifest(root / MANIFEST_NAME)
    match: dict[str, Record] = {}
    for r in records:
        match.setdefault(r.path, r)
        match.setdefault(Path(r.path).name, r)
        match.setdefault(r.photo_id, r)
    names = {c["id"]: c["name"] for c in coco.get("categories", [])}
    images, missing = {}, []
    for image in coco.get("images", []):
        name = str(image.get("file_name", ""))
        r = match.get(name) or match.get(Path(name).name) or match.get(Path(name).stem)
        if r is None:
            missing.append(name)
        images[image["id"]] = r
    _unknown(missing, str(path))
    found: dict[str, list] = defaultdict(list)
    for i, a in enumerate(coco.get("annotations", [])):
        label = names.get(a.get("category_id"), str(a.get("category_id")))
        if labels and label not in labels:
            continue
        r = images.get(a.get("image_id"))
        if r is None:
            raise ValueError(f"{path}: annotation {i} refers to unknown image {a.get('image_id')}")
        x, y, w, h = (float(v) for v in a["bbox"])
        box = _checked((x, y, x + w, y + h), r, f"{path}: annotation {i}")
        found[r.photo_id].append((box, label, a.get("score")))
    return apply_boxes(root, found, f"coco:{path.name}")


def detect(
    root: str | Path,
    detector,
    overwrite: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    show_progress: bool = True,
) -> int:
    """Run ``detector`` on the photos without a box (all with ``overwrite``) and write what it
    finds into the manifest; unreadable photos are skipped."""
    root = Path(root)
    records = read_manifest(root / MANIFEST_NAME)
    todo = [r for r in records if overwrite or r.cue_box is None]
    found: dict[str, list] = {}
    real_root = root.resolve()
    for r in progress(todo, desc="detect", unit="img", disable=not show_progress):
        try:
            photo = load_rgb(real_root, r.path, max_pixels)
        except Exception:  # noqa: BLE001 - an unreadable photo gets no box
            continue
        hits = detector(photo)
        if hits:
            found[r.photo_id] = [(d.box, d.label, d.score) for d in hits]
    return apply_boxes(root, found, detector.name)


def dataset_report(records: Sequence[Record]) -> list[dict]:
    """Per class (and ``(all)``): photos, observations, the share of photos with a cue box,
    the mean share of the photo the box covers, the observers and the top observer's share."""
    by_class: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_class[r.taxon_name].append(r)
    rows = []
    for name, recs in [*sorted(by_class.items()), ("(all)", list(records))]:
        cued = [r for r in recs if r.cue_box is not None]
        areas = [
            (r.cue_x1 - r.cue_x0) * (r.cue_y1 - r.cue_y0) / (r.width * r.height)
            for r in cued
            if r.width and r.height
        ]
        observers = Counter(r.observer_id or r.observer for r in recs if r.observer_id or r.observer)
        rows.append(
            {
                "class": name,
                "photos": len(recs),
                "observations": len({r.observation_id for r in recs}),
                "cue_share": len(cued) / len(recs) if recs else 0.0,
                "cue_area": statistics.mean(areas) if areas else 0.0,
                "cue_labels": ", ".join(sorted({r.cue_label for r in cued if r.cue_label})),
                "observers": len(observers),
                "top_observer_share": observers.most_common(1)[0][1] / len(recs) if observers else 0.0,
            }
        )
    return rows


REPORT_LEGEND = (
    "`cue_share`: share of the class's photos with a cue box (imported, detected or generated); "
    "`cue_area`: the mean share of the photo the box covers; `top_observer_share`: the share of "
    "the class's photos taken by its most prolific observer. A class far above the others in "
    "`cue_share` can be learned from the cue instead of the organism; one dominated by an "
    "observer, from that person's camera and places."
)


def flagged(rows: Sequence[dict], factor: float = 3.0, floor: float = 0.2) -> list[str]:
    """Classes whose ``cue_share`` is at least ``floor`` and ``factor`` times the others'."""
    classes = [r for r in rows if r["class"] != "(all)"]
    out = []
    for r in classes:
        others = [o["cue_share"] for o in classes if o is not r]
        rest = statistics.mean(others) if others else 0.0
        if r["cue_share"] >= floor and r["cue_share"] >= factor * max(rest, 1e-9):
            out.append(r["class"])
    return out


def report_markdown(rows: Sequence[dict]) -> list[str]:
    """The "Bias in the data" section (for ``report.md`` and ``dataset_report.md``)."""
    from inat_lightning.analysis.tables import to_markdown

    lines = ["## Bias in the data (before any training)", "", REPORT_LEGEND, ""]
    for name in flagged(rows):
        share = next(r["cue_share"] for r in rows if r["class"] == name)
        lines += [f"- **{name}: {share:.0%} of its photos show the cue** — far above the others.", ""]
    return [*lines, to_markdown(list(rows)), ""]


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m inat_lightning.data.cues",
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
    p.add_argument("--detector", default="opencv", choices=("opencv", "torchvision"))
    p.add_argument("--labels", nargs="*", default=["person"], help="torchvision: COCO classes")
    p.add_argument("--weights-path", help="torchvision: a local state dict (no download)")
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
            from inat_lightning.analysis.detect import build_detector

            kwargs = {}
            if a.detector == "torchvision":
                kwargs = {"labels": tuple(a.labels), "weights_path": a.weights_path}
                if a.weights_path:
                    kwargs["weights"] = None
            print(f"{detect(root, build_detector(a.detector, **kwargs))} photos got a cue box")
        else:
            text = "\n".join(["# Dataset report", "", *report_markdown(dataset_report(read_manifest(root / MANIFEST_NAME)))])
            (root / "dataset_report.md").write_text(text, encoding="utf-8")
            print(text)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        ap.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
