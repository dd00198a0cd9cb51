"""The offline cue detector's quality on real photos a package ships (scikit-image's data):
which photos with a person get a ``person`` box that overlaps the person, and how many boxes
land on photos without one. Not a ratio (there is no baseline detector offline): a tally.

    python -m bench.bench_detect [--detector opencv]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from PIL import Image

from bench.common import report
from inat_lightning.analysis.detect import build_detector

# scikit-image photo → the person's box (x0, y0, x1, y1), or None: no person in it
PHOTOS = {
    "astronaut": (140, 0, 460, 512),  # Eileen Collins, head and shoulders
    "camera": (180, 40, 420, 380),  # the cameraman, face in profile
    "coffee": None,
    "chelsea": None,  # a cat
    "rocket": None,
    "coins": None,  # Greek coins, some with heads on them
    "hubble_deep_field": None,
    "immunohistochemistry": None,
}


def rgb(name: str) -> Image.Image:
    from skimage import data

    a = np.asarray(getattr(data, name)())
    if a.ndim == 2:
        a = np.stack([a] * 3, -1)
    return Image.fromarray(a[..., :3].astype(np.uint8))


def overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--detector", default="opencv")
    a = ap.parse_args()
    detector = build_detector(a.detector)
    rows, t0 = [], time.perf_counter()
    for name, person in PHOTOS.items():
        try:
            photo = rgb(name)
        except Exception as e:  # noqa: BLE001 - a photo this scikit-image lacks
            rows.append({"photo": name, "error": type(e).__name__})
            continue
        boxes = [d.box for d in detector(photo)]
        hit = person is not None and any(overlaps(b, person) for b in boxes)
        rows.append(
            {"photo": name, "person": person is not None, "boxes": len(boxes), "found": hit}
        )
    people = [r for r in rows if r.get("person")]
    empty = [r for r in rows if "person" in r and not r["person"]]
    report(
        "detect",
        {
            "detector": detector.name,
            "photos": rows,
            "people_found": f"{sum(r['found'] for r in people)}/{len(people)}",
            "false_alarms": f"{sum(r['boxes'] > 0 for r in empty)}/{len(empty)} photos",
            "seconds_per_photo": round((time.perf_counter() - t0) / len(rows), 3),
        },
    )


if __name__ == "__main__":
    main()
