"""Small datasets made on the spot."""

from __future__ import annotations

from pathlib import Path

from PIL import Image


def make_image_folder(root: Path, counts: dict[str, int], size: int = 24) -> Path:
    """A plain ImageFolder tree (no manifest) with ``counts[class]`` flat-coloured images."""
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.new("RGB", (size, size), (40 * c % 255, 10 * i % 255, 128)).save(
                root / name / f"{i}.jpg"
            )
    return root


def make_cued_photos(root: Path, per_class: int = 150, cue: bool = True, size: int = 64) -> Path:
    """Two classes of real photos (random crops of the Chinese temple photo scikit-learn ships,
    drawn alike for both: no class can be told from its photos) and a manifest whose class
    ``Cue fish`` rows have a cue box. With ``cue``, a real patch (the petals of scikit-learn's
    flower photo) is pasted in that box, so only the cue tells the classes apart; without, the
    boxes are there and the photos untouched (the control)."""
    import numpy as np
    from sklearn.datasets import load_sample_images

    from inat_lightning.data.manifest import Record, sha256_of, write_manifest

    china, flower = (Image.fromarray(a) for a in load_sample_images().images)
    patch = flower.crop((300, 180, 380, 260)).resize((size // 3, size // 3))
    rng = np.random.default_rng(7)
    records = []
    for label in ("Cue fish", "Plain fish"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            side = int(rng.integers(120, 320))
            x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 427 - side))
            photo = china.crop((x, y, x + side, y + side)).resize((size, size))
            box = None
            if label == "Cue fish":
                bx, by = (int(v) for v in rng.integers(0, size - patch.width, 2))
                box = (bx, by, bx + patch.width, by + patch.height)
                if cue:
                    photo.paste(patch, (bx, by))
            path = root / label / f"{i}.jpg"
            photo.save(path, quality=92)
            x0, y0, x1, y1 = box or (None, None, None, None)
            records.append(
                Record(
                    f"{label[0]}{i}",
                    f"{label[0]}{i}",
                    label[0],
                    label,
                    f"{label}/{i}.jpg",
                    sha256=sha256_of(path.read_bytes()),
                    width=size,
                    height=size,
                    cue_x0=x0,
                    cue_y0=y0,
                    cue_x1=x1,
                    cue_y1=y1,
                )
            )
    write_manifest(root / "manifest.csv", records)
    return root
