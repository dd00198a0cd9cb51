"""How well a checkpoint tells photos of its species from photos of others: the out-of-set
scores of the test photos (known species) against those of held-out species
(``data.held_out_classes``, never trained on) — AUROC per score, and at the checkpoint's rule
(:class:`~inat_lightning.models.open_set.OpenSetRule`) the share of known photos accepted and
the false-accept rate (held-out photos taken for a known species)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torchmetrics.functional.classification import binary_auroc

from inat_lightning.models.open_set import OPEN_SET_SCORES, OpenSetRule, open_set_score


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """The probability that a known species' photo scores above a held-out one's (ties half)."""
    preds = torch.from_numpy(np.concatenate([known, unknown]).astype(np.float64))
    target = torch.cat([torch.ones(len(known)), torch.zeros(len(unknown))]).long()
    return float(binary_auroc(preds, target))


def open_set_report(
    known: np.ndarray, unknown: np.ndarray | None, temperature: float, rule: OpenSetRule | None
) -> dict[str, Any] | None:
    """The measures above from the logits of known-species (test) and held-out photos;
    ``None`` when there is neither a rule nor held-out photos."""
    if rule is None and unknown is None:
        return None
    found: dict[str, Any] = {
        "rule": rule.to_dict() if rule else None,
        "test_photos": len(known),
        "held_out_photos": 0 if unknown is None else len(unknown),
    }
    if rule is not None and len(known):
        found["known_accepted"] = float(np.mean(~rule.flags(known, temperature)))
    if unknown is not None and len(unknown) and len(known):
        found["auroc"] = {
            s: auroc(open_set_score(known, temperature, s), open_set_score(unknown, temperature, s))
            for s in OPEN_SET_SCORES.names()
        }
        if rule is not None:
            found["false_accept_rate"] = float(np.mean(~rule.flags(unknown, temperature)))
    return found
