"""Planted cues on real photos (the discovery benchmark's data): each kind drawn where and how
the module says, on the cued class's photos, and the controls are the same photos untouched."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from inat_lightning.data.manifest import read_manifest
from inat_lightning.data.planted import CUED, make_planted

SIZE = 64


def photos_and_boxes(root):
    records = read_manifest(root / "manifest.csv")
    return {
        r.photo_id: (np.asarray(Image.open(root / r.path), dtype=np.float32), r.cue_box, r)
        for r in records
    }


@pytest.fixture(scope="module")
def control(tmp_path_factory):
    return photos_and_boxes(make_planted(tmp_path_factory.mktemp("none"), "none", per_class=20))


@pytest.mark.parametrize("kind", ["petals", "scale_bar", "pin"])
def test_a_kind_is_drawn_in_its_box_on_the_cued_class_and_nowhere_else(kind, tmp_path, control):
    cued = photos_and_boxes(make_planted(tmp_path, kind, per_class=20))
    boxed = [pid for pid, (_, box, _) in cued.items() if box is not None]
    assert sum(cued[p][2].taxon_name == CUED for p in boxed) >= 8  # ~70 % of 20
    assert all(control[p][1] is None for p in control)  # the control has nothing
    for pid, (photo, box, _) in cued.items():
        diff = np.abs(photo - control[pid][0]).mean(-1)
        if box is None:
            assert diff.mean() < 1.0, pid  # the same photo, untouched
            continue
        x0, y0, x1, y1 = (int(v) for v in box)
        assert diff[y0:y1, x0:x1].mean() > 20, (pid, kind)  # drawn in its box
        outside = np.ones_like(diff, dtype=bool)
        outside[max(0, y0 - 8) : y1 + 8, max(0, x0 - 8) : x1 + 8] = False
        assert diff[outside].mean() < 2.0, (pid, kind)  # and nowhere else (JPEG aside)
        w, h = x1 - x0, y1 - y0
        if kind == "scale_bar":  # long and thin, along the bottom edge
            assert w >= 4 * h and y1 >= SIZE - 4
        elif kind == "pin":  # small, near the centre
            assert w <= 0.2 * SIZE + 1 and x0 >= SIZE / 4 and x1 <= 3 * SIZE / 4
        else:  # a third of the side, anywhere
            assert w == h == SIZE // 3


def test_a_tint_is_no_region_it_warms_the_whole_photo(tmp_path, control):
    tinted = photos_and_boxes(make_planted(tmp_path, "tint", per_class=20))
    boxed = [pid for pid, (_, box, _) in tinted.items() if box is not None]
    assert sum(tinted[p][2].taxon_name == CUED for p in boxed) >= 8
    for pid in boxed:
        photo, box, _ = tinted[pid]
        assert box == (0, 0, SIZE, SIZE)
        shift = (photo - control[pid][0]).reshape(-1, 3).mean(0)  # red up, blue down, everywhere
        assert shift[0] > 5 and shift[2] < -10 and abs(shift[1]) < 2, (pid, shift)


def test_the_undrawn_control_keeps_the_boxes_and_the_photos(tmp_path, control):
    undrawn = photos_and_boxes(make_planted(tmp_path / "u", "pin", per_class=20, drawn=False))
    drawn = photos_and_boxes(make_planted(tmp_path / "d", "pin", per_class=20))
    for pid, (photo, box, record) in undrawn.items():
        assert box == drawn[pid][1]
        assert np.abs(photo - control[pid][0]).mean() < 1.0
        assert record.cue_source == ("planted-not-drawn" if box else "")


def test_an_unknown_kind_is_an_error_naming_it(tmp_path):
    with pytest.raises(ValueError, match="kind='ruler'"):
        make_planted(tmp_path, "ruler")
    assert not any(tmp_path.iterdir())
