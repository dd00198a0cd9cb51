"""Boxes finer than a CAM, by occlusion: the strips of the window around a region, and the box
the costly strips span (the hand-wired networks of ``test_discover.py`` run it whole)."""

from __future__ import annotations

import numpy as np

from inat_lightning.analysis.occlusion import grown, occlusion_box, occlusion_strips


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
