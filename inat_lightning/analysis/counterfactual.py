"""Counterfactual photos made from the photo itself, for data no generator drew: the cue removed
by filling its box, a same-size hole elsewhere (the control: is the model hurt by any hole?), and
the cue pasted onto another photo.

    clean = remove_box(photo, box, "inpaint")           # or "blur", "mean"
    control = remove_box(photo, control_box(box, *photo.size, rng), "inpaint")
    cued = paste_box(other_photo, photo, box)
"""

from __future__ import annotations

import cv2
import numpy as np
from PIL import Image, ImageFilter

REMOVALS = ("inpaint", "blur", "mean")
Box = tuple[float, float, float, float]


def _pixels(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """A box clipped to the image, in whole pixels, at least one pixel wide and high."""
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0 = max(0, min(width - 1, x0)), max(0, min(height - 1, y0))
    return x0, y0, max(x0 + 1, min(width, x1)), max(y0 + 1, min(height, y1))


def remove_box(photo: Image.Image, box: Box, method: str = "inpaint") -> Image.Image:
    """The photo with ``box`` filled: ``inpaint`` (OpenCV's Telea inpainting from the
    surroundings), ``blur`` (a strong Gaussian blur of the box) or ``mean`` (the photo's mean
    colour)."""
    if method not in REMOVALS:
        raise ValueError(f"removal={method!r}: one of {REMOVALS}")
    rgb = photo.convert("RGB")
    x0, y0, x1, y1 = _pixels(box, *rgb.size)
    if method == "mean":
        out = rgb.copy()
        mean = tuple(int(v) for v in np.asarray(rgb).reshape(-1, 3).mean(0))
        out.paste(mean, (x0, y0, x1, y1))
        return out
    if method == "blur":
        out = rgb.copy()
        radius = max(2.0, 0.5 * max(x1 - x0, y1 - y0))
        out.paste(rgb.filter(ImageFilter.GaussianBlur(radius)).crop((x0, y0, x1, y1)), (x0, y0))
        return out
    array = np.asarray(rgb).copy()
    mask = np.zeros(array.shape[:2], np.uint8)
    mask[y0:y1, x0:x1] = 255
    radius = max(3, int(0.1 * max(x1 - x0, y1 - y0)))
    return Image.fromarray(cv2.inpaint(array, mask, radius, cv2.INPAINT_TELEA))


def control_box(
    box: Box, width: int, height: int, rng: np.random.Generator, tries: int = 50
) -> Box:
    """A box of the same size as ``box`` at a random place that does not overlap it (the
    farthest corner when none is free): removing it measures what any hole costs the model."""
    x0, y0, x1, y1 = _pixels(box, width, height)
    w, h = x1 - x0, y1 - y0
    for _ in range(tries):
        cx = int(rng.integers(0, max(1, width - w + 1)))
        cy = int(rng.integers(0, max(1, height - h + 1)))
        if cx + w <= x0 or cx >= x1 or cy + h <= y0 or cy >= y1:
            return (cx, cy, cx + w, cy + h)
    corners = [(0, 0), (width - w, 0), (0, height - h), (width - w, height - h)]
    cx, cy = max(corners, key=lambda c: abs(c[0] - x0) + abs(c[1] - y0))
    return (max(0, cx), max(0, cy), max(0, cx) + w, max(0, cy) + h)


def paste_box(target: Image.Image, source: Image.Image, box: Box) -> tuple[Image.Image, Box]:
    """``target`` with the ``box`` region of ``source`` pasted at the same relative place and
    size; returns the photo and the pasted box in ``target``'s pixels."""
    src = source.convert("RGB")
    x0, y0, x1, y1 = _pixels(box, *src.size)
    tgt = target.convert("RGB").copy()
    sx, sy = tgt.width / src.width, tgt.height / src.height
    where = _pixels((x0 * sx, y0 * sy, x1 * sx, y1 * sy), *tgt.size)
    patch = src.crop((x0, y0, x1, y1)).resize((where[2] - where[0], where[3] - where[1]))
    tgt.paste(patch, where[:2])
    return tgt, where


def lookalike(removed_preds: np.ndarray, c: int) -> int | None:
    """The class most predicted for class ``c``'s photos once their cue is removed: what the
    model takes them for without it (``None`` when they all stay ``c``)."""
    others = removed_preds[removed_preds != c]
    return int(np.bincount(others).argmax()) if len(others) else None
