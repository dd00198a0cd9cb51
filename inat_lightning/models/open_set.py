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
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from inat_lightning.registry import Registry
from inat_lightning.validation import require, require_numbers


@dataclass(frozen=True)
class OpenSetScore:
    """How in-set a photo looks: ``fn(z, temperature)`` of the tempered logits ``z`` (``(N, K)``)
    gives ``(N,)`` scores, higher for the trained species'; ``low``/``high`` bound its values
    (a threshold outside flags every photo or none, so a checkpoint's is refused)."""

    fn: Callable[[torch.Tensor, float], torch.Tensor]
    low: float = -math.inf
    high: float = math.inf


#: the out-of-set scores (``open_set.score``); yours by ``OPEN_SET_SCORES.register`` or an
#: ``inat_lightning.open_set_scores`` entry point
OPEN_SET_SCORES: Registry[OpenSetScore] = Registry(
    "out-of-set score", "open_set.score", "open_set_scores"
)
OPEN_SET_SCORES.register("max_softmax", OpenSetScore(lambda z, t: z.softmax(1).amax(1), 0.0, 1.0))
OPEN_SET_SCORES.register("energy", OpenSetScore(lambda z, t: t * torch.logsumexp(z, 1)))


def check_rule_settings(score: str = "max_softmax", accept: float = 0.95) -> None:
    """The rules of a rule's settings (``open_set.*`` of ``train.py``), also run on the config
    before any work and on a checkpoint's rule when it is read."""
    OPEN_SET_SCORES.check(score, "score")
    require_numbers({"accept": accept}, (), ("accept",))
    require({"accept": (0 < accept <= 1, "in (0, 1]")}, {"accept": accept})


def open_set_score(logits: np.ndarray, temperature: float, kind: str) -> np.ndarray:
    """``(N,)`` how in-set each row of logits looks (higher: more like a known species)."""
    score = OPEN_SET_SCORES.get(kind, "score")
    z = torch.from_numpy(np.asarray(logits, dtype=np.float32)) / temperature
    return np.asarray(score.fn(z, temperature), dtype=np.float32).reshape(len(z))


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
        check_rule_settings(score, accept)
        found = open_set_score(logits, temperature, score)
        return cls(score, float(np.quantile(found, 1 - accept)), float(accept))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, found: object, where: str) -> OpenSetRule:
        """A rule read from a checkpoint that may come from anyone: its settings' rules, and a
        finite threshold within its score's range (:class:`OpenSetScore`)."""
        if not isinstance(found, Mapping) or set(found) != {"score", "threshold", "accept"}:
            raise ValueError(f"{where}: not an out-of-set rule: {found!r:.200}")
        score, threshold, accept = found["score"], found["threshold"], found["accept"]
        try:
            check_rule_settings(score, accept)
            require_numbers({"threshold": threshold}, (), ("threshold",))
            found_score = OPEN_SET_SCORES.get(score, "score")
            low, high = found_score.low, found_score.high
            ok = math.isfinite(threshold) and low <= threshold <= high
            want = f"finite, in [{low}, {high}] (the {score} range)"
            require({"threshold": (ok, want)}, {"threshold": threshold})
        except ValueError as e:
            raise ValueError(f"{where}: not an out-of-set rule: {e}") from None
        return cls(score, float(threshold), float(accept))
