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
) -> list[Pick]:
    """Per class, the ``per_class`` most confident correct and wrong predictions; then the
    ``top_mistakes`` most confident mistakes not already picked. Ties go by position."""
    order = np.lexsort((np.arange(len(confidence)), -confidence))  # most confident first
    picks: list[Pick] = []
    for c in range(num_classes):
        mine = order[labels[order] == c]
        right = mine[preds[mine] == c][:per_class]
        wrong = mine[preds[mine] != c][:per_class]
        picks += [Pick(int(i), "correct") for i in right] + [Pick(int(i), "wrong") for i in wrong]
    taken = {p.position for p in picks}
    mistakes = [int(i) for i in order if preds[i] != labels[i] and int(i) not in taken]
    return picks + [Pick(i, "top_mistake") for i in mistakes[:top_mistakes]]
