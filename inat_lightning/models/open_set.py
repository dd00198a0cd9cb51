"""Out-of-set photos: a species the model was never taught still gets one of its classes as an
answer. A score says how much a photo looks like the training classes — the maximum softmax
probability (Hendrycks & Gimpel, 2017) or the negative energy ``T · logsumexp(z / T)`` (Liu et
al., 2020) — and photos scoring below a threshold are flagged ``not_in_classes``.

The threshold is fitted after training on the validation split alone (no out-of-set photos
needed): the score that accepts ``accept`` of the known species' photos (95 % by default). Its
cost, the share of unknown species' photos still accepted (false-accept rate), and the
threshold-free AUROC are measured by ``evaluate.py`` on held-out species
(``data.held_out_classes``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

SCORES = ("max_softmax", "energy")


def open_set_score(logits: np.ndarray, temperature: float, kind: str) -> np.ndarray:
    """``(N,)`` how in-set each row of logits looks (higher: more like a known species)."""
    if kind not in SCORES:
        raise ValueError(f"score={kind!r}: must be one of {SCORES}")
    z = torch.from_numpy(np.asarray(logits, dtype=np.float32)) / temperature
    if kind == "energy":
        return (temperature * torch.logsumexp(z, 1)).numpy()
    return torch.softmax(z, 1).max(1).values.numpy()


@dataclass(frozen=True)
class OpenSetRule:
    """Flag a photo whose ``score`` is below ``threshold`` (fitted to accept ``accept`` of the
    known species' validation photos)."""

    score: str
    threshold: float
    accept: float

    def flags(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        """``(N,)`` True where a photo is taken for a species outside the classes."""
        return open_set_score(logits, temperature, self.score) < self.threshold

    @classmethod
    def fit(
        cls,
        logits: np.ndarray,
        temperature: float,
        score: str = "max_softmax",
        accept: float = 0.95,
    ) -> OpenSetRule:
        """The rule accepting ``accept`` of ``logits`` (known species' validation photos)."""
        if not 0 < accept <= 1:
            raise ValueError(f"accept={accept!r}: must be in (0, 1]")
        found = open_set_score(logits, temperature, score)
        return cls(score, float(np.quantile(found, 1 - accept)), float(accept))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, found: object, where: str) -> OpenSetRule:
        """A rule read from a checkpoint that may come from anyone (values checked)."""
        if not isinstance(found, Mapping) or set(found) != {"score", "threshold", "accept"}:
            raise ValueError(f"{where}: not an out-of-set rule: {found!r}")
        score, threshold, accept = found["score"], found["threshold"], found["accept"]
        ok = (
            score in SCORES
            and isinstance(threshold, float | int)
            and math.isfinite(threshold)
            and isinstance(accept, float | int)
            and 0 < accept <= 1
        )
        if not ok:
            raise ValueError(f"{where}: not an out-of-set rule: {dict(found)!r}")
        return cls(score, float(threshold), float(accept))
