"""Confusion counted sparsely, so the cost grows with photos and classes, not classes squared:
iNaturalist-scale class counts (10,000–40,000 species) would need 0.8–12.8 GB per dense
``K × K`` int64 matrix.

* :class:`ConfusionPairs`, a torchmetrics ``Metric``, keeps each photo's (true, predicted) pair
  (two int64 per photo); under DDP the ranks all-gather their pairs (an ``O(photos)`` payload,
  not an ``O(K²)`` all-reduce).
* :class:`Confusion` holds the nonzero cells (true, predicted, count). Per-class precision,
  recall and F1, accuracy, the rank-level metrics of the taxonomy and the most-confused pairs
  all come from it; :meth:`Confusion.dense` builds a matrix only for a block a figure shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchmetrics import Metric

from inat_lightning.data.taxonomy import METRIC_RANKS, Taxonomy
from inat_lightning.models.metric_names import WITHIN_SHARE
from inat_lightning.registry import Registry


@dataclass  # not frozen: torchmetrics rebuilds a metric's output when it moves it
class Confusion:
    """The nonzero cells of a ``num_classes``-class confusion matrix: ``true[i]`` taken for
    ``pred[i]``, ``count[i]`` times (rows are true classes, as in scikit-learn)."""

    num_classes: int
    true: np.ndarray
    pred: np.ndarray
    count: np.ndarray

    @classmethod
    def from_pairs(cls, true: Any, pred: Any, num_classes: int) -> Confusion:
        """Count (true, predicted) pairs of photos."""
        t = np.asarray(true, dtype=np.int64).ravel()
        p = np.asarray(pred, dtype=np.int64).ravel()
        cells, counts = np.unique(t * num_classes + p, return_counts=True)
        return cls(num_classes, cells // num_classes, cells % num_classes, counts.astype(np.int64))

    @classmethod
    def from_dense(cls, matrix: Any) -> Confusion:
        m = np.asarray(matrix)
        t, p = np.nonzero(m)
        return cls(len(m), t.astype(np.int64), p.astype(np.int64), m[t, p].astype(np.int64))

    @classmethod
    def from_record(cls, record: dict) -> Confusion:
        """From :meth:`record` (``metrics.json``)."""
        cells = np.asarray(record["cells"], dtype=np.int64).reshape(-1, 3)
        return cls(int(record["num_classes"]), cells[:, 0], cells[:, 1], cells[:, 2])

    def record(self) -> dict[str, Any]:
        """Plain values for ``metrics.json``: ``num_classes`` and ``cells`` ``[true, pred, n]``."""
        cells = np.stack([self.true, self.pred, self.count], 1) if len(self.count) else []
        return {"num_classes": self.num_classes, "cells": np.asarray(cells).tolist()}

    # ------------------------------------------------------------------ per class, O(K + cells)
    @property
    def total(self) -> int:
        return int(self.count.sum())

    def _per_class(self, index: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        weights = self.count if mask is None else self.count * mask
        return np.bincount(index, weights=weights, minlength=self.num_classes).astype(np.int64)

    @property
    def support(self) -> np.ndarray:
        """Photos per true class."""
        return self._per_class(self.true)

    @property
    def predicted(self) -> np.ndarray:
        """Photos per predicted class."""
        return self._per_class(self.pred)

    @property
    def correct(self) -> np.ndarray:
        """The diagonal: photos of each class predicted as that class."""
        return self._per_class(self.true, self.true == self.pred)

    def accuracy(self) -> float:
        return float(self.correct.sum() / self.total) if self.total else float("nan")

    def precision_recall_f1(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per class; 0 where undefined (scikit-learn's ``zero_division=0``)."""
        tp = self.correct.astype(float)
        support, predicted = self.support.astype(float), self.predicted.astype(float)
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
        return precision, recall, f1

    def mistakes(self) -> list[tuple[int, int, int]]:
        """The off-diagonal cells as ``(count, true, pred)``, most frequent first."""
        off = self.true != self.pred
        cells = zip(self.count[off].tolist(), self.true[off].tolist(), self.pred[off].tolist())
        return sorted(cells, key=lambda c: (-c[0], c[1], c[2]))

    def involvement(self) -> np.ndarray:
        """Per class: the mistakes it is part of, as the true or the predicted class."""
        off = self.true != self.pred
        return self._per_class(self.true, off) + self._per_class(self.pred, off)

    def dense(self, classes: Sequence[int] | None = None) -> np.ndarray:
        """The matrix, or its block over ``classes`` (in that order): for figures only."""
        keep = np.arange(self.num_classes) if classes is None else np.asarray(classes, dtype=int)
        where = np.full(self.num_classes, -1, dtype=np.int64)
        where[keep] = np.arange(len(keep))
        out = np.zeros((len(keep), len(keep)), dtype=np.int64)
        t, p = where[self.true], where[self.pred]
        inside = (t >= 0) & (p >= 0)
        np.add.at(out, (t[inside], p[inside]), self.count[inside])
        return out

    def share_within(self, group: np.ndarray, mistakes_only: bool = False) -> float:
        """Share of the photos (or of the mistakes only) whose true and predicted classes share
        a group (``group[k]``: an id per class, -1 for none; a class shares with itself)."""
        g_t, g_p = group[self.true], group[self.pred]
        same = ((g_t == g_p) & (g_t >= 0)) | (self.true == self.pred)
        keep = self.true != self.pred if mistakes_only else np.ones(len(self.count), bool)
        total = self.count[keep].sum()
        return float(self.count[keep & same].sum() / total) if total else float("nan")


def rank_scalars(confusion: Confusion, taxonomy: Taxonomy) -> dict[str, float]:
    """``acc_<rank>`` for each metric rank the classes have (a prediction counts at a rank when
    the predicted species shares it with the truth) and ``within_genus_share`` (the share of
    mistakes between congeners): ``O(K + cells)``."""
    out = {f"acc_{r}": confusion.share_within(taxonomy.group_ids(r)) for r in taxonomy.ranks}
    lowest = METRIC_RANKS[0]
    if lowest in taxonomy.ranks:
        out[WITHIN_SHARE] = confusion.share_within(taxonomy.group_ids(lowest), True)
    return out


class ConfusionPairs(Metric):
    """Each photo's (true, predicted) pair, synced across ranks by concatenation; ``compute``
    gives a :class:`Confusion`. State: two int64 per photo, nothing per class."""

    full_state_update = False

    def __init__(self, num_classes: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.add_state("true", default=[], dist_reduce_fx="cat")
        self.add_state("pred", default=[], dist_reduce_fx="cat")

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.true.append(target.detach().long().flatten())
        self.pred.append(logits.detach().argmax(-1).long().flatten())

    def compute(self) -> Confusion:
        true, pred = (_flat(s) for s in (self.true, self.pred))
        return Confusion.from_pairs(true.cpu().numpy(), pred.cpu().numpy(), self.num_classes)


def _flat(state: Any) -> torch.Tensor:
    """A list state (or, after a sync, one tensor) as one 1-D tensor."""
    if isinstance(state, torch.Tensor):
        return state.flatten()
    return torch.cat([s.flatten() for s in state]) if state else torch.zeros(0, dtype=torch.long)


class PairScore(Metric):
    """A macro score (``acc_macro``, ``f1_macro``, ``precision_macro``, ``recall_macro``) of the
    pairs a :class:`ConfusionPairs` holds, with no state of its own: torchmetrics' macro
    metrics build a ``K × K`` matrix at every update (12.8 GB at 40,000 classes); these read the
    shared per-photo pairs instead. The ``owner`` feeds the pairs; the others only read them.
    Whoever owns the pairs resets them (the classifier, at each epoch start): they outlive the
    epoch's logging, for the confusion counts read after a test."""

    full_state_update = False

    def __init__(self, pairs: ConfusionPairs, score: str, owner: bool = False) -> None:
        super().__init__()
        PAIR_SCORES.check(score)
        self._pairs = [pairs]  # a list: the shared pairs are not this metric's child or state
        self.score, self.owner = score, owner

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if self.owner:
            self._pairs[0].update(logits, target)

    def compute(self) -> torch.Tensor:
        found = PAIR_SCORES.get(self.score)(self._pairs[0].compute())
        return torch.tensor(found, dtype=torch.float32)


def _macro(values: np.ndarray, confusion: Confusion, present_only: bool) -> float:
    """The mean over classes; over classes present (true or predicted) when ``present_only``,
    as torchmetrics' macro averages do."""
    if present_only:
        seen = (confusion.support + confusion.predicted) > 0
        values = values[seen]
    return float(values.mean()) if len(values) else 0.0


#: the macro scores of the per-photo pairs, logged as ``<stage>/<name>``: a function of the
#: :class:`Confusion` counts. Yours by ``PAIR_SCORES.register`` or an
#: ``inat_lightning.pair_scores`` entry point (then also a ``monitor`` or ``optimized_metric``)
PAIR_SCORES: Registry[Callable[[Confusion], float]] = Registry(
    "macro metric", "score", "pair_scores"
)
PAIR_SCORES.register("acc_macro", lambda c: _macro(c.precision_recall_f1()[1], c, True))
PAIR_SCORES.register("recall_macro", lambda c: _macro(c.precision_recall_f1()[1], c, True))
PAIR_SCORES.register("precision_macro", lambda c: _macro(c.precision_recall_f1()[0], c, True))
PAIR_SCORES.register("f1_macro", lambda c: _macro(c.precision_recall_f1()[2], c, True))
