"""Train augmentations and eval transforms (torchvision v2), ImageNet normalisation."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_normalized_tensor(
    mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> list[v2.Transform]:
    return [
        v2.ToImage(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(list(mean), list(std)),
    ]


def train_transform(
    image_size: int,
    scale: tuple[float, float] = (0.35, 1.0),
    hflip: float = 0.5,
    color_jitter: float = 0.1,
) -> v2.Compose:
    """Random resized crop + flip + mild colour jitter (colour is a species cue: keep it mild)."""
    ops: list[v2.Transform] = [
        v2.RandomResizedCrop(image_size, scale=tuple(scale), antialias=True),
        v2.RandomHorizontalFlip(hflip),
    ]
    if color_jitter > 0:
        ops.append(v2.ColorJitter(color_jitter, color_jitter, color_jitter))
    return v2.Compose(ops + _to_normalized_tensor())


def eval_transform(
    image_size: int,
    crop_ratio: float = 0.875,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """Resize the short side to ``image_size / crop_ratio``, then centre-crop ``image_size``."""
    return v2.Compose(
        [
            v2.Resize(round(image_size / crop_ratio), antialias=True),
            v2.CenterCrop(image_size),
            *_to_normalized_tensor(mean, std),
        ]
    )


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Undo ImageNet normalisation: tensors back to [0, 1] for display."""
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(-1, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)


def box_after_eval(
    box: tuple[float, float, float, float], width: int, height: int, size: int, ratio: float
) -> tuple[float, float, float, float]:
    """A box in a photo's pixels, in the network input's pixels after :func:`eval_transform`
    (short side resized to ``size / ratio``, then a centre crop of ``size``)."""
    scale = round(size / ratio) / min(width, height)
    dx, dy = (width * scale - size) / 2, (height * scale - size) / 2
    x0, y0, x1, y1 = box
    return (x0 * scale - dx, y0 * scale - dy, x1 * scale - dx, y1 * scale - dy)
