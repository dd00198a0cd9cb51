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
