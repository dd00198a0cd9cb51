"""Boxes finer than a CAM, by occlusion: the strips of the window around a region, and the box
the costly strips span (the hand-wired networks of ``test_discover.py`` run it whole)."""

from __future__ import annotations

import numpy as np
import torch

from inat_lightning.analysis.occlusion import (
    Refinement,
    area,
    finer_boxes,
    grown,
    occlusion_box,
    occlusion_strips,
)


def test_occlusion_strips_cut_the_window_around_a_box_into_rows_then_columns():
    strips = occlusion_strips((10.0, 10.0, 22.0, 22.0), 32, 32, 4)  # window 4..28, strips of 6
    assert len(strips) == 8
    assert strips[0] == (4, 4, 28, 10) and strips[3] == (4, 22, 28, 28)  # rows
    assert strips[4] == (4, 4, 10, 28) and strips[7] == (22, 4, 28, 28)  # columns
    edge = occlusion_strips((0.0, 20.0, 8.0, 32.0), 32, 32, 2)  # clipped at the input's edges
    assert edge[0] == (0, 14, 12, 23) and edge[-1] == (6, 14, 12, 32)


def test_the_fine_box_spans_the_strips_whose_occlusion_costs_the_class_around_the_worst():
    strips = occlusion_strips((0.0, 0.0, 16.0, 16.0), 32, 32, 4)  # window 0..24, strips of 6
    rows = [0.0, 2.0, 1.5, 0.3]  # a bar in rows 1 and 2 (row 3 below half the worst)
    cols = [1.2, 0.0, 1.8, 1.0]  # ... in columns 2 and 3; column 0 as costly but apart from it
    assert occlusion_box(np.array(rows + cols), strips, 0.5) == (12.0, 6.0, 24.0, 18.0)
    assert occlusion_box(np.array(rows + [0.0] * 4), strips, 0.5) is None  # no column costs it


def test_a_grown_box_reaches_whole_pixels_inside_the_input():
    assert grown((2.5, 3.0, 10.2, 12.0), 1.5, 12, 16) == (1.0, 1.0, 12.0, 12.0)
    assert grown((0.0, 0.0, 4.0, 4.0), 0.0, 8, 8) == (0.0, 0.0, 4.0, 4.0)


class RedMeter(torch.nn.Module):
    """Hand-wired: class 0's logit is the red in the photo, class 1's a constant."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(1, 2)
        self.fc.weight.data = torch.tensor([[1.0], [0.0]])
        self.fc.bias.data = torch.tensor([0.0, 0.5])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x[:, :1].clamp(min=0).sum((2, 3)) / 10)


def red_square(x0: int, y0: int, side: int, size: int = 32) -> torch.Tensor:
    x = torch.full((1, 3, size, size), -1.0)
    x[0, 0, y0 : y0 + side, x0 : x0 + side] = 2.0
    return x


def test_the_finer_box_holds_the_cost_and_is_none_where_nothing_costs_or_fits():
    net, how = RedMeter(), Refinement(grid=8, keep=0.5, hold=0.9, batch_size=32)
    x = torch.cat([red_square(12, 14, 4), red_square(12, 14, 4), torch.full((1, 3, 32, 32), -1.0)])
    coarse = (8.0, 8.0, 24.0, 24.0)  # a CAM's 16 px region around a 4 px square
    fine, tight, nothing = finer_boxes(
        net, x, [(0, coarse), (1, (12.0, 14.0, 16.0, 18.0)), (2, coarse)], 0, how
    )
    assert fine is not None and area(fine) < area(coarse)
    assert fine[0] <= 12 and fine[1] <= 14 and fine[2] >= 16 and fine[3] >= 18  # holds it all
    assert tight is None  # the region is the square: nothing smaller holds its cost
    assert nothing is None  # occluding the region costs the class nothing
    narrow = (12.0, 14.0, 14.0, 16.0)  # its window is 4 px: fewer pixels than 8 strips
    assert finer_boxes(net, x, [(0, narrow)], 0, how) == [None]
    assert finer_boxes(net, x[:0], [], 0, how) == []
