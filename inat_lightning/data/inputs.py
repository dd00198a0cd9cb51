"""What ``predict.py`` is pointed at, as records under one root: an image file, a folder, a
glob pattern or a ``manifest.csv``.

Observations (the photos fused into one answer) come from the manifest's ``observation_id``
whenever the photos belong to a scraped tree (a ``manifest.csv`` in their folder or above it,
whether given as the folder, the manifest, a glob or one file; a manifest above the photos that
cannot be read, another tool's, is passed over with a warning); elsewhere, in a folder, each
sub-folder is one observation and each image directly in the folder is its own. A manifest's
``taxon_name`` is kept as the true label (accuracy can then be reported); files found otherwise
have none.
"""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path

from inat_lightning.data.manifest import (
    IMAGE_EXTENSIONS,
    MANIFEST_NAME,
    Record,
    link_out_of,
    load_records,
)

log = logging.getLogger(__name__)
GLOB_CHARS = "*?["


def _record(root: Path, path: Path, observation: str) -> Record:
    rel = path.relative_to(root).as_posix()
    return Record(photo_id=rel, observation_id=observation, taxon_id="", taxon_name="", path=rel)


def _observation_of(root: Path, path: Path) -> str:
    """The sub-folder (relative to ``root``) an image sits in, or the image itself at the top."""
    parent = path.parent.relative_to(root).as_posix()
    return parent if parent != "." else path.relative_to(root).as_posix()


def _images_below(root: Path) -> tuple[list[Path], int]:
    """Image files under ``root`` (hidden ones skipped), sorted, and how many other files were
    passed over. A folder symlinked out of ``root`` is not entered (its photos would not be
    read), with a warning naming it."""
    images, others = [], 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for sub in (Path(folder) / d for d in dirs):
            target = link_out_of(root, sub)
            if target is not None:
                log.warning("%s: symlinked to %s, out of the inputs: not read", sub, target)
        for name in sorted(files):
            if name.startswith("."):
                continue
            if name.lower().endswith(IMAGE_EXTENSIONS):
                images.append(Path(folder) / name)
            else:
                others += 1
    return images, others


def _from_manifest_above(folder: Path, images: list[Path]) -> tuple[Path, list[Record]] | None:
    """``(root, records)`` when ``folder`` or a folder above it holds a manifest listing the
    ``images`` (resolved paths): their manifest rows (observation, truth), and plain records
    for images it does not list; ``None`` when no manifest is found, or the one found cannot be
    read (another tool's ``manifest.csv``, a broken one: a warning, not an error, since it only
    adds observations and truth to photos that were named without it)."""
    root = _manifest_above(folder)
    if root is None:
        return None
    try:  # any number of its rows may name files gone since: only the images' rows matter
        listed = load_records(root, max_missing=1.0)
    except (OSError, ValueError) as e:
        log.warning("not using the manifest above the inputs: %s", e)
        return None
    rows = {(root / r.path).resolve(): r for r in listed}
    if not any(p in rows for p in images):
        return None
    return root, [rows.get(p) or _record(root, p, _observation_of(root, p)) for p in images]


def _manifest_above(folder: Path) -> Path | None:
    """The nearest of ``folder`` and the folders above it that holds a manifest (one that
    cannot be looked into is passed over)."""
    for root in (folder, *folder.parents):
        try:
            if (root / MANIFEST_NAME).is_file():
                return root
        except OSError:
            continue
    return None


def collect_inputs(inputs: str) -> tuple[Path, list[Record], int]:
    """``(root, records, skipped_non_images)`` for ``inputs``; ``ValueError`` naming it when
    nothing is there or it finds no image."""
    text = str(inputs)
    path = Path(text).expanduser()
    if any(c in text for c in GLOB_CHARS) and not path.exists():
        matches = sorted(Path(p) for p in glob.glob(text, recursive=True))
        files = [p for p in matches if p.is_file()]
        images = [p for p in files if p.name.lower().endswith(IMAGE_EXTENSIONS)]
        if not images:
            raise ValueError(f"inputs={text!r}: the pattern matches no image")
        root = Path(os.path.commonpath([str(p.parent.resolve()) for p in images]))
        images = [p.resolve() for p in images]
        found = _from_manifest_above(root, images)
        if found:
            return (*found, len(files) - len(images))
        records = [_record(root, p, _observation_of(root, p)) for p in images]
        return root, records, len(files) - len(images)
    if not path.exists():
        raise ValueError(f"inputs={text!r}: no such file, folder or pattern")
    if path.is_file() and path.name.endswith(".csv"):
        root = path.resolve().parent
        if path.name != MANIFEST_NAME:
            raise ValueError(f"inputs={text!r}: a manifest must be named {MANIFEST_NAME}")
        records = load_records(root)
        if not records:
            raise ValueError(f"inputs={text!r}: the manifest lists no image")
        return root, records, 0
    if path.is_file():
        if not path.name.lower().endswith(IMAGE_EXTENSIONS):
            raise ValueError(f"inputs={text!r}: not an image ({', '.join(IMAGE_EXTENSIONS)})")
        root = path.resolve().parent
        found = _from_manifest_above(root, [path.resolve()])
        return (*found, 0) if found else (root, [_record(root, path.resolve(), path.name)], 0)
    root = path.resolve()
    if (root / MANIFEST_NAME).is_file():
        return collect_inputs(str(root / MANIFEST_NAME))
    images, others = _images_below(root)
    if not images:
        raise ValueError(f"inputs={text!r}: no image in this folder ({others} other files)")
    return root, [_record(root, p, _observation_of(root, p)) for p in images], others
