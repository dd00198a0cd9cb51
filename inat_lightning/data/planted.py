"""Planted cues on real photos: a dataset whose shortcut is known, to measure cue discovery.

Four classes of real photos that packages ship (crops of scikit-learn's and scikit-image's
sample photos, not drawn by this project): ``Cued fish`` and ``Twin fish`` are crops of the same
photo, drawn alike — only a planted cue can tell them apart — and ``Coffee fish`` and ``Cat fish``
are crops of two other photos. A planted cue is drawn on ``share`` of the ``Cued fish`` photos and
``other_share`` of the others, and its box written into the manifest (only the measured audit
and the benchmark read it; discovery never does). The kinds differ in shape, size, colour and
where they sit, because a cue is not always in a corner:

* ``petals`` — a square patch of a real flower photo (a third of the side), anywhere;
* ``scale_bar`` — a long, thin black-and-white bar (a ruler), along the bottom edge;
* ``pin`` — a small red disc with a white highlight (a specimen pin's head), near the centre;
* ``tint`` — no region at all: a warm colour cast over the whole photo (a lab's lamp, the light
  of a season), its "box" the whole photo — the limit of a region-based discovery, measured;
* ``none`` — nothing drawn: the control, the same photos.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from inat_lightning.data.manifest import Record, sha256_of, write_manifest

CUED, TWIN = "Cued fish", "Twin fish"
Box = tuple[int, int, int, int]


def _petals(photo: Image.Image, rng: np.random.Generator, flower: Image.Image) -> Box:
    side = photo.width // 3
    patch = flower.resize((side, side))
    x, y = (int(v) for v in rng.integers(0, photo.width - side, 2))
    photo.paste(patch, (x, y))
    return x, y, x + side, y + side


def _scale_bar(photo: Image.Image, rng: np.random.Generator, _flower: Image.Image) -> Box:
    w, h = round(photo.width * 0.55), max(3, round(photo.height * 0.09))
    x = int(rng.integers(0, photo.width - w))
    y = photo.height - h - int(rng.integers(1, 4))
    draw = ImageDraw.Draw(photo)
    step = max(2, w // 8)
    for i, x0 in enumerate(range(x, x + w, step)):
        fill = (0, 0, 0) if i % 2 == 0 else (255, 255, 255)
        draw.rectangle((x0, y, min(x0 + step, x + w) - 1, y + h - 1), fill=fill)
    return x, y, x + w, y + h


def _pin(photo: Image.Image, rng: np.random.Generator, _flower: Image.Image) -> Box:
    d = max(5, round(photo.width * 0.2))
    lo, hi = photo.width // 4, 3 * photo.width // 4 - d
    x, y = (int(v) for v in rng.integers(lo, hi, 2))
    draw = ImageDraw.Draw(photo)
    draw.ellipse((x, y, x + d - 1, y + d - 1), fill=(220, 20, 30), outline=(120, 0, 0))
    q = max(1, d // 4)
    draw.ellipse((x + q, y + q, x + 2 * q, y + 2 * q), fill=(255, 255, 255))
    return x, y, x + d, y + d


def _tint(photo: Image.Image, _rng: np.random.Generator, _flower: Image.Image) -> Box:
    pixels = np.asarray(photo, dtype=np.float32) * np.array([1.2, 1.0, 0.75], np.float32)
    photo.paste(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return 0, 0, photo.width, photo.height


#: the planted cue kinds: how each is drawn onto a photo (returns its box)
KINDS: dict[str, Callable[[Image.Image, np.random.Generator, Image.Image], Box] | None] = {
    "petals": _petals,
    "scale_bar": _scale_bar,
    "pin": _pin,
    "tint": _tint,
    "none": None,
}


def sources() -> dict[str, Image.Image]:
    """The real photos the classes are cropped from, and the flower the petals come from."""
    from skimage import data
    from sklearn.datasets import load_sample_images

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    return {
        CUED: china,
        TWIN: china,
        "Coffee fish": Image.fromarray(data.coffee()),
        "Cat fish": Image.fromarray(data.chelsea()),
        "_flower": flower.crop((300, 180, 380, 260)),
    }


def make_planted(
    root: Path,
    kind: str,
    seed: int = 0,
    per_class: int = 100,
    size: int = 64,
    share: float = 0.7,
    other_share: float = 0.03,
    drawn: bool = True,
) -> Path:
    """Write the four classes to ``root`` (an ``ImageFolder`` tree and ``manifest.csv``), the
    ``kind`` of cue planted as the module doc says. The same ``seed`` gives the same photos for
    every kind: ``none`` is the control of each, and ``drawn=False`` the control that keeps the
    boxes where the cue would be (the measured audit then asks what the empty region is worth).
    Returns ``root``."""
    if kind not in KINDS:
        raise ValueError(f"kind={kind!r}: one of {sorted(KINDS)}")
    src = sources()
    flower = src.pop("_flower")
    draw = KINDS[kind]
    rng = np.random.default_rng(seed)
    records = []
    for label, photo in src.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(min(photo.size) // 3, min(photo.size)))
            x = int(rng.integers(0, photo.width - side + 1))
            y = int(rng.integers(0, photo.height - side + 1))
            crop = photo.crop((x, y, x + side, y + side)).resize((size, size)).convert("RGB")
            cue_rng = np.random.default_rng([seed, len(records)])
            planted = cue_rng.random() < (share if label == CUED else other_share)
            box = None
            if draw is not None and planted:
                box = draw(crop if drawn else crop.copy(), cue_rng, flower)
            path = root / label / f"{i}.jpg"
            crop.save(path, quality=92)
            x0, y0, x1, y1 = box or (None, None, None, None)
            records.append(
                Record(
                    f"{label[:3]}{i}", f"{label[:3]}{i}", label[:3], label, f"{label}/{i}.jpg",
                    sha256=sha256_of(path.read_bytes()), width=size, height=size,
                    cue_x0=x0, cue_y0=y0, cue_x1=x1, cue_y1=y1,
                    cue_label=kind if box else "",
                    cue_source=("planted" if drawn else "planted-not-drawn") if box else "",
                )
            )  # fmt: skip
    write_manifest(root / "manifest.csv", records)
    return root
