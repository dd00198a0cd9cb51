"""What the place prior adds on the test split: top-1 accuracy of the vision model alone, of
the prior alone (where and when, no pixels) and of the two fused
(:func:`~inat_lightning.models.prior.fused_log_probabilities`), overall and for the classes the
prior helps or hurts most (typically look-alikes living apart)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inat_lightning.data.geo import Place
from inat_lightning.models.prior import PlacePrior, fused_log_probabilities


def place_gain(
    log_vision: np.ndarray,
    labels: np.ndarray,
    places: Sequence[Place],
    prior: PlacePrior,
    weight: float,
    names: Sequence[str],
    top: int = 6,
) -> tuple[dict[str, Any], np.ndarray]:
    """The summary (module doc) and the fused log-probabilities, one row per test photo."""
    fused = fused_log_probabilities(log_vision, prior, places, weight)
    right = {
        "vision": log_vision.argmax(1) == labels,
        "prior": prior.log_probabilities(places).argmax(1) == labels,
        "fused": fused.argmax(1) == labels,
    }
    per_class = []
    for k, name in enumerate(names):
        mine = labels == k
        if mine.any():
            v, f = float(right["vision"][mine].mean()), float(right["fused"][mine].mean())
            row = {"class": name, "photos": int(mine.sum()), "vision": v, "fused": f}
            per_class.append({**row, "gain": f - v})
    per_class.sort(key=lambda r: (-abs(r["gain"]), r["class"]))
    n = max(len(labels), 1)
    found = {
        "weight": weight,
        "photos": len(labels),
        "with_place_or_date": sum(p.known for p in places),
        "prior_photos": prior.photos,
        **{f"top1_{k}": float(v.sum() / n) for k, v in right.items()},
    }
    found["gain"] = found["top1_fused"] - found["top1_vision"]
    found["classes"] = per_class[:top]
    return found, fused
