"""Image dataset that survives bad files: a corrupt image is reported and skipped, never fatal."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate
from torchvision.io import ImageReadMode, decode_image, read_file

log = logging.getLogger(__name__)
TENSOR_DECODED = (".jpg", ".jpeg", ".png")


class ImageDataset(Dataset):
    """``(root / path, label)`` pairs, decoded as RGB and transformed.

    An unreadable image yields ``None`` (with a warning naming the path and the reason); use
    :func:`collate_skipping` as the loader's ``collate_fn`` to drop it from the batch.
    """

    def __init__(
        self,
        root: str | Path,
        paths: Sequence[str],
        labels: Sequence[int],
        transform: Callable[[Image.Image], torch.Tensor] | None = None,
    ) -> None:
        self.root = Path(root)
        self.paths = list(paths)
        self.labels = list(labels)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> torch.Tensor | Image.Image:
        """The decoded RGB image: a uint8 ``(3, H, W)`` tensor from torchvision's libjpeg-turbo /
        libpng decoders for JPEG and PNG (1.2-1.5x faster than Pillow, see docs/benchmarks.md),
        a Pillow image for the other formats. Raises on a corrupt or truncated file."""
        path = self.root / self.paths[index]
        if path.suffix.lower() in TENSOR_DECODED:
            return decode_image(read_file(str(path)), mode=ImageReadMode.RGB)
        with Image.open(path) as img:
            return img.convert("RGB")  # convert() forces the full decode inside the caller's try

    def __getitem__(self, index: int) -> dict[str, Any] | None:
        try:
            img = self.load(index)
            x = self.transform(img) if self.transform else img
        except Exception as e:  # noqa: BLE001 - any decode failure must skip, not crash the epoch
            log.warning("skipping unreadable image %s: %s: %s", self.paths[index], type(e).__name__, e)
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
