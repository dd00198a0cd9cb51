"""Cue boxes for real data, in the manifest's ``cue_*`` columns.

* :func:`import_csv` / :func:`import_coco` read the boxes labelling tools export — a plain CSV
  ``photo_id,x0,y0,x1,y1,label`` or COCO JSON;
* :func:`detect` fills them with any detector: a callable ``photo -> [Detection]`` with a
  ``name`` (those of :mod:`inat_lightning.analysis.detect`, passed in by the ``cues`` command).

The manifest holds one box per photo: several boxes of a photo are merged into the box that
encloses them. The manifest is rewritten atomically, the previous one kept as
``manifest.csv.bak``; only the ``cue_*`` columns change. The command line is
:mod:`inat_lightning.cues`; the dataset's bias report is :mod:`inat_lightning.analysis.data_bias`.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import defaultdict
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
