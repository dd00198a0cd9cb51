"""Image dataset that survives bad files: a corrupt image is reported and skipped, never fatal.

Every image is read through :func:`open_checked`: its path, symlinks followed, must stay inside
the dataset root, and its header must announce at most ``max_pixels`` pixels before anything is
decoded (a 1 MB PNG can announce 20,000 × 20,000 pixels)."""

from __future__ import annotations

import io
import logging
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.io import ImageReadMode, decode_image, read_file

from inat_lightning.data.manifest import DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)
TENSOR_DECODED = (".jpg", ".jpeg", ".png")


class DataError(RuntimeError):
    """A fault of the data source itself (a corrupt shard), not of one photo: never skipped,
    the loader stops with it."""


class OutsideRoot(ValueError):
    """A path that leads out of the dataset root (a symlink out of it): never read. ``target``:
    where it leads."""

    target: Path


def resolve_inside(root: Path, relative: str) -> Path:
    """``root / relative`` with symlinks followed; :class:`OutsideRoot` when it leaves ``root``
    (best resolved once by the caller, not per image: a relative root, or one through a link,
    is resolved here only when the path seems to leave it)."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root) and not path.is_relative_to(root.resolve()):
        error = OutsideRoot(f"path {relative!r} leaves the dataset root {str(root)!r} to {path}")
        error.target = path
        raise error
    return path


def open_checked(root: Path, relative: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Path:
    """The resolved path of an image that may be decoded: inside ``root`` (resolved) and
    announcing at most ``max_pixels`` pixels in its header (read without decoding). Raises
    ``ValueError``."""
    path = resolve_inside(root, relative)
    with Image.open(path) as img:
        width, height = img.size
    if width * height > max_pixels:
        raise ValueError(
            f"{width}x{height} = {width * height} pixels exceeds data.max_pixels={max_pixels}"
        )
    return path


def load_rgb(root: Path, relative: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A checked image (see :func:`open_checked`), fully decoded as an RGB Pillow image."""
    with Image.open(open_checked(root, relative, max_pixels)) as img:
        return img.convert("RGB")


def load_readable(
    root: Path, records: Sequence, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[list, list[Image.Image], list[str]]:
    """The records whose photo loads (inside the root, under the pixel limit, decodable), their
    photos, and the paths of the others (each logged): one bad file never ends the work."""
    kept, photos, skipped = [], [], []
    real_root = Path(root).resolve()
    for r in records:
        try:
            photos.append(load_rgb(real_root, r.path, max_pixels))
        except Exception as e:  # noqa: BLE001 - any failure to read is this file's
            log.warning("skipping unreadable image %s: %s", r.path, e)
            skipped.append(r.path)
            continue
        kept.append(r)
    return kept, photos, skipped


def check_readable(
    root: Path,
    paths: Sequence[str],
    max_share: float,
    sample: int = 500,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    seed: int = 0,
) -> None:
    """Open the headers of up to ``sample`` of ``paths`` (a fixed random sample: a bounded cost
    at any size) before any work; when more than ``max_share`` of them cannot be used a
    ``ValueError`` says how many and why (not images, or symlinks out of the root: never
    read) and shows the first few. A cut or damaged body is found only when decoded (skipped
    then, counted in ``<stage>/skipped_images``)."""
    if not paths:
        return
    rng = random.Random(seed)
    chosen = paths if len(paths) <= sample else rng.sample(list(paths), sample)
    real_root = Path(root).resolve()
    bad: dict[str, list[str]] = {
        "are not readable images": [],
        "are symlinks out of the dataset root, never read": [],
    }
    for rel in chosen:
        try:
            open_checked(real_root, rel, max_pixels)
        except OutsideRoot as e:
            bad["are symlinks out of the dataset root, never read"].append(f"{rel} -> {e.target}")
        except Exception:  # noqa: BLE001 - any failure to open is an unreadable image
            bad["are not readable images"].append(rel)
    count = sum(len(v) for v in bad.values())
    if count > max_share * len(chosen):
        why = "; ".join(
            f"{len(v)} {reason} (first: {', '.join(v[:5])})" for reason, v in bad.items() if v
        )
        raise ValueError(
            f"{count} of {len(chosen)} images checked (a sample of {len(paths)}) cannot be used, "
            f"more than max_missing={max_share:g}: {why}"
        )


def decode_bytes(
    data: bytes, suffix: str, max_pixels: int = DEFAULT_MAX_PIXELS
) -> torch.Tensor | Image.Image:
    """A photo's bytes decoded as :meth:`ImageDataset.load` decodes its file: the header's size
    checked against ``max_pixels`` first, JPEG and PNG by torchvision's decoders, the other
    formats by Pillow. Raises on a corrupt photo."""
    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if width * height > max_pixels:
            raise ValueError(
                f"{width}x{height} = {width * height} pixels exceeds data.max_pixels={max_pixels}"
            )
        if suffix.lower() not in TENSOR_DECODED:
            return img.convert("RGB")
    raw = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return decode_image(raw, mode=ImageReadMode.RGB)


class ImageDataset(Dataset):
    """``(root / path, label)`` pairs, decoded as RGB and transformed.

    An unreadable image yields ``None`` (with a warning naming the path and the reason); use
    :func:`collate_skipping` as the loader's ``collate_fn`` to drop it from the batch. So does
    an image outside ``root`` or larger than ``max_pixels`` (see :func:`open_checked`).
    """

    def __init__(
        self,
        root: str | Path,
        paths: Sequence[str],
        labels: Sequence[int],
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.root = Path(root)
        self._real_root = self.root.resolve()  # once: every image is checked against it
        self.max_pixels = max_pixels
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor | Image.Image:
        """The decoded RGB image: a uint8 ``(3, H, W)`` tensor from torchvision's libjpeg-turbo /
        libpng decoders for JPEG and PNG (1.2-1.5x faster than Pillow, see docs/benchmarks.md),
        a Pillow image for the other formats. Raises on a corrupt or truncated file."""
        path = open_checked(self._real_root, self.paths[index], self.max_pixels)
        if path.suffix.lower() in TENSOR_DECODED:
            return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() forces the full decode inside the caller's try

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            img = self.load(index)
            x = self.transform(img) if self.transform else img
        except DataError:
            raise
        except Exception as e:  # noqa: BLE001 - any decode failure must skip, not crash the epoch
            log.warning(
                "skipping unreadable image %s: %s: %s", self.paths[index], type(e).__name__, e
            )
            return None
        return {"image": x, "label": self.labels[index], "index": index}


def collate_skipping(samples: list[dict[str, Any] | None]) -> dict[str, Any]:
    """Collate the good samples; ``n_skipped`` counts the bad ones so the model can log it."""
    good = [s for s in samples if s is not None]
    n_skipped = len(samples) - len(good)
    if not good:
        return {"image": None, "label": None, "index": None, "n_skipped": n_skipped}
    batch = default_collate(good)
    batch["n_skipped"] = n_skipped
    return batch
