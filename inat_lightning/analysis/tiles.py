"""Readable picture tiles: a small network input upscaled, optionally a box outlined, and a
caption band under it (what was true, what was predicted, how sure)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from inat_lightning.analysis.gradcam import blend

CAPTION_PX = 13


def caption_tile(
    image01: np.ndarray,
    lines: Sequence[str],
    size: int = 256,
    box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """An ``(H, W, 3)`` image in [0, 1] as a ``size`` px square tile with ``lines`` of caption
    below (white on black) and, when given, ``box`` (in the image's pixels) outlined in green."""
    h, w = image01.shape[:2]
    picture = Image.fromarray((np.clip(image01, 0, 1) * 255).astype(np.uint8))
    picture = picture.resize((size, size), Image.Resampling.BICUBIC)
    font = ImageFont.load_default(size=CAPTION_PX)
    band = (CAPTION_PX + 3) * len(lines) + 6
    tile = Image.new("RGB", (size, size + band), "black")
    tile.paste(picture, (0, 0))
    draw = ImageDraw.Draw(tile)
    if box is not None:
        x0, y0, x1, y1 = box
        sx, sy = size / w, size / h
        draw.rectangle((x0 * sx, y0 * sy, x1 * sx - 1, y1 * sy - 1), outline=(0, 255, 0), width=2)
    for i, line in enumerate(lines):
        draw.text((4, size + 3 + i * (CAPTION_PX + 3)), line, fill="white", font=font)
    return tile


def cam_tile(
    photo01: np.ndarray,
    cam: np.ndarray,
    lines: Sequence[str],
    style: str = "red",
    alpha: float = 0.5,
    size: int = 256,
    box: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """:func:`caption_tile` of a photo with its ``(H, W)`` CAM blended over it:
    see :func:`~inat_lightning.analysis.gradcam.blend`."""
    blended = blend(photo01[None], cam[None], style, alpha)[0]
    return caption_tile(blended, lines, size, box)


def side_by_side(
    root: Path, rows: Sequence[Sequence[str]], out: Path, size: int = 160
) -> Path | None:
    """A picture of photos side by side, one row per group (near-duplicate copies), each
    captioned with its path; photos that cannot be read are left out. Returns ``out``, or
    ``None`` when no photo could be read."""
    from inat_lightning.data.dataset import load_rgb

    lines: list[list[Image.Image]] = []
    for paths in rows:
        tiles = []
        for path in paths:
            try:
                photo = np.asarray(load_rgb(root, path), dtype=np.float32) / 255
            except Exception:  # noqa: BLE001 - any photo that fails to decode is left out
                continue
            tiles.append(caption_tile(photo, [Path(path).name[:24]], size))
        if tiles:
            lines.append(tiles)
    if not lines:
        return None
    width = max(len(t) for t in lines) * size
    height = sum(t[0].height for t in lines)
    sheet = Image.new("RGB", (width, height), "black")
    y = 0
    for tiles in lines:
        for x, tile in enumerate(tiles):
            sheet.paste(tile, (x * size, y))
        y += tiles[0].height
    sheet.save(out)
    return out
