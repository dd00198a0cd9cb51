"""Which images to explain: per class a correct and a wrong one, plus the worst mistakes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pick:
    """An image to explain: its ``position`` in the prediction arrays, and why it was picked."""

    position: int
    kind: str  # "correct" | "wrong" | "top_mistake"


def select_examples(
    labels: np.ndarray,
    preds: np.ndarray,
    confidence: np.ndarray,
    num_classes: int,
    per_class: int = 1,
    top_mistakes: int = 8,
    max_classes: int | None = None,
) -> list[Pick]:
    """Per class, the ``per_class`` most confident correct and wrong predictions; then the
    ``top_mistakes`` most confident mistakes not already picked. Ties go by position.

    With more than ``max_classes`` classes, only the ``max_classes`` with the most mistakes get
    their examples (a gallery of 10,000 species is neither readable nor cheap).
    ``O(photos log photos + K)``: photos are grouped by class once."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    order = np.lexsort((np.arange(len(confidence)), -np.asarray(confidence)))  # most confident
    grouped = order[np.argsort(labels[order], kind="stable")]  # by class, then confidence
    bounds = np.searchsorted(labels[grouped], np.arange(num_classes + 1))
    classes: np.ndarray = np.arange(num_classes)
    if max_classes is not None and num_classes > max_classes:
        wrong = np.bincount(labels[labels != preds], minlength=num_classes)
        classes = np.sort(np.argsort(-wrong, kind="stable")[:max_classes])
    picks: list[Pick] = []
    for c in classes:
        mine = grouped[bounds[c] : bounds[c + 1]]
        right = mine[preds[mine] == c][:per_class]
        wrong_ = mine[preds[mine] != c][:per_class]
        picks += [Pick(int(i), "correct") for i in right] + [Pick(int(i), "wrong") for i in wrong_]
    taken = {p.position for p in picks}
    mistakes = [int(i) for i in order if preds[i] != labels[i] and int(i) not in taken]
    return picks + [Pick(i, "top_mistake") for i in mistakes[:top_mistakes]]
