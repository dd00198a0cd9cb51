"""Boxes drawn finer than the CAM that found them, by occlusion: what hiding a part of the
photo costs the class. A CAM of a deep layer is coarse (8 × 8 at 64 px: a 6 px bar is found as a
24 px square); the cue itself is the part whose occlusion costs the class as much as the CAM's
whole region. Cue discovery (:mod:`inat_lightning.analysis.discover`) writes these boxes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

Box = tuple[float, float, float, float]
#: photos whose occlusions are stacked together (memory stays bounded, batches stay full)
AT_ONCE = 8


@dataclass(frozen=True)
class Refinement:
    """How :func:`finer_boxes` works: the ``audit.discovery.refine_*`` keys (their defaults live
    in :class:`~inat_lightning.analysis.discover.DiscoverConfig`).

    Args:
        grid: rows and columns occluded in turn around each region (0: no refinement).
        keep: a row (column) is in the box when occluding it costs this share of the costliest.
        hold: the box is kept when occluding it costs this share of what the region costs.
        batch_size: inputs per forward pass.
    """

    grid: int
    keep: float
    hold: float
    batch_size: int


def area(box: Box) -> float:
    """A box's area (0 when empty)."""
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def log_odds(net: nn.Module, x: torch.Tensor, c: int, batch_size: int) -> np.ndarray:
    """Class ``c``'s log-odds ``log p_c - log(1 - p_c)`` for each input: unlike the probability,
    it keeps moving when the model is sure."""
    device, out = next(net.parameters()).device, []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            z = net(x[i : i + batch_size].to(device)).float()
            others = torch.cat([z[:, :c], z[:, c + 1 :]], 1)
            out.append((z[:, c] - torch.logsumexp(others, 1)).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def occluded(x: torch.Tensor, boxes: Sequence[Box]) -> torch.Tensor:
    """``x`` (``3 × H × W``, normalised) as is, then once per box with the box filled with the
    mean colour (0)."""
    batch = x.repeat(len(boxes) + 1, 1, 1, 1)
    for k, box in enumerate(boxes, 1):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        batch[k, :, y0:y1, x0:x1] = 0
    return batch


def grown(box: Box, by: float, height: int, width: int) -> Box:
    """``box`` grown by ``by`` pixels each way, out to whole pixels (the box occluded is the
    box written), inside the input."""
    x0, y0, x1, y1 = box
    return (
        float(max(0, math.floor(x0 - by))), float(max(0, math.floor(y0 - by))),
        float(min(width, math.ceil(x1 + by))), float(min(height, math.ceil(y1 + by))),
    )  # fmt: skip


def occlusion_strips(box: Box, height: int, width: int, grid: int) -> list[tuple[int, ...]]:
    """The window around ``box`` (grown by half its side each way, inside the input) cut into
    ``grid`` rows, then ``grid`` columns (``x0, y0, x1, y1`` each): ``2 × grid`` occlusions
    find a compact cue's extent on both axes, where ``grid²`` cells would cost far more."""
    x0, y0, x1, y1 = box
    gx, gy = (x1 - x0) / 2, (y1 - y0) / 2
    wx0, wx1 = max(0, round(x0 - gx)), min(width, round(x1 + gx))
    wy0, wy1 = max(0, round(y0 - gy)), min(height, round(y1 + gy))
    xs = np.linspace(wx0, wx1, grid + 1).round().astype(int)
    ys = np.linspace(wy0, wy1, grid + 1).round().astype(int)
    rows = [(wx0, int(ys[i]), wx1, int(ys[i + 1])) for i in range(grid)]
    return rows + [(int(xs[i]), wy0, int(xs[i + 1]), wy1) for i in range(grid)]


def _run(drops: np.ndarray, keep: float) -> tuple[int, int] | None:
    """The contiguous run of ``drops`` around its largest that are at least ``keep`` of it."""
    top = int(drops.argmax())
    if drops[top] <= 0:
        return None
    lo, hi = top, top
    while lo > 0 and drops[lo - 1] >= keep * drops[top]:
        lo -= 1
    while hi < len(drops) - 1 and drops[hi + 1] >= keep * drops[top]:
        hi += 1
    return lo, hi


def occlusion_box(drops: np.ndarray, strips: Sequence[tuple], keep: float) -> Box | None:
    """The box spanning, on each axis, the strips (:func:`occlusion_strips`; ``drops``: what
    occluding each costs the class) around the costliest that cost at least ``keep`` of it;
    ``None`` when occluding none of them costs the class."""
    grid = len(strips) // 2
    rows, cols = _run(drops[:grid], keep), _run(drops[grid:], keep)
    if rows is None or cols is None:
        return None
    return (
        float(strips[grid + cols[0]][0]), float(strips[rows[0]][1]),
        float(strips[grid + cols[1]][2]), float(strips[rows[1]][3]),
    )  # fmt: skip


def finer_boxes(
    net: nn.Module,
    inputs: torch.Tensor,
    regions: Sequence[tuple[int, Box]],
    c: int,
    how: Refinement,
) -> list[Box | None]:
    """For each ``(photo index, box)`` of ``inputs`` (normalised, ``N × 3 × H × W``), a finer
    box, or ``None`` where none holds: the window around the box, cut into ``how.grid`` rows
    and as many columns, each occluded in turn (the mean colour: 0 in the normalised input),
    gives the strips that lower class ``c``'s log-odds most (:func:`occlusion_box`). That box,
    or it grown by half a strip or a strip (a cue seldom fits the strips): the smallest that is
    smaller than the region and whose occlusion costs ``how.hold`` of what the region's costs.
    ``None`` too where occluding the region costs the class nothing (nothing to draw finer) or
    the window has fewer pixels than strips."""
    height, width = inputs.shape[-2:]
    out: list[Box | None] = []
    for start in range(0, len(regions), AT_ONCE):
        chunk = regions[start : start + AT_ONCE]
        strips = [occlusion_strips(box, height, width, how.grid) for _, box in chunk]
        jobs = [(i, [box, *s]) for (i, box), s in zip(chunk, strips)]
        odds = _odds(net, inputs, jobs, c, how.batch_size)
        ladders = []
        for (_, box), s, o in zip(chunk, strips, odds):
            narrow = any(b[2] <= b[0] or b[3] <= b[1] for b in s)  # fewer pixels than strips
            fine = None if narrow or o[0] <= o[1] else occlusion_box(o[0] - o[2:], s, how.keep)
            step = (s[0][3] - s[0][1] + s[-1][2] - s[-1][0]) / 4  # half a strip
            ladder = [grown(fine, step * k, height, width) for k in range(3)] if fine else []
            ladders.append([b for b in ladder if area(b) < area(box)])
        jobs = [(i, ladder) for (i, _), ladder in zip(chunk, ladders)]
        for o, ladder, after in zip(odds, ladders, _odds(net, inputs, jobs, c, how.batch_size)):
            needed = how.hold * (o[0] - o[1])
            held = [b for b, a in zip(ladder, after[1:]) if o[0] - a >= needed]
            out.append(held[0] if held else None)
    return out


def _odds(
    net: nn.Module, inputs: torch.Tensor, jobs: list[tuple[int, list[Box]]], c: int, batch: int
) -> list[np.ndarray]:
    """Per ``(photo index, boxes)``: class ``c``'s log-odds of the photo as is, then with each
    box occluded (:func:`occluded`), all the photos' occlusions in shared batches."""
    stacks = [occluded(inputs[i], boxes) for i, boxes in jobs]
    if not stacks:
        return []
    flat = log_odds(net, torch.cat(stacks), c, batch)
    return np.split(flat, np.cumsum([len(t) for t in stacks])[:-1])
