"""Answers that say less when unsure, and what that buys: the taxonomic fallback
(:class:`RankAnswer`: the species, else the genus, else the family whose summed probability
reaches a threshold) and the risk–coverage curves of species-only and fallback answers.

**Risk–coverage**: at each threshold ``t``, *coverage* is the share of photos answered (species
only: top probability ≥ ``t``; fallback: some rank's summed probability ≥ ``t``) and *accuracy*
the share of those answers that are right at the rank given (the true species lies in the
answered genus or family). A curve further up and right answers more photos at the same
accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inat_lightning.data.taxonomy import METRIC_RANKS

#: an answer at the finest rank that is sure enough: (rank, name, summed probability)
Answer = tuple[str, str, float]
FALLBACK_RANKS = METRIC_RANKS  # species, else the lowest ranks up
THRESHOLDS = tuple(round(float(t), 3) for t in np.linspace(0.0, 0.975, 40))


class RankAnswer:
    """Taxonomic fallback: the species when its probability reaches ``threshold``, else the
    genus, else the family whose summed probability does (the classes' lineages from the
    checkpoint, ``taxa.csv`` at training); else the species, unsure. ``O(K)`` per answer."""

    def __init__(
        self, names: list[str], lineages: dict[str, dict[str, str]] | None, threshold: float
    ):
        self.names, self.threshold = names, threshold
        self.ranks: list[tuple[str, np.ndarray, list[str]]] = []
        for rank in FALLBACK_RANKS if lineages else ():
            taxa = [(lineages.get(n) or {}).get(rank, "") for n in names]
            groups = sorted({t for t in taxa if t})
            if groups:
                position = {g: i for i, g in enumerate(groups)}
                codes = np.array([position.get(t, -1) for t in taxa])
                self.ranks.append((rank, codes, groups))

    def levels(self, p: np.ndarray) -> list[tuple[str, int, float]]:
        """The best taxon at each rank, finest first: ``(rank, index, probability)`` with the
        index a class for ``species`` and a group of that rank otherwise."""
        best = int(np.argmax(p))
        found = [("species", best, float(p[best]))]
        for rank, codes, groups in self.ranks:
            known = codes >= 0
            sums = np.bincount(codes[known], weights=p[known], minlength=len(groups))
            top = int(np.argmax(sums))
            found.append((rank, top, float(sums[top])))
        return found

    def name(self, rank: str, index: int) -> str:
        if rank == "species":
            return self.names[index]
        return next(groups for r, _, groups in self.ranks if r == rank)[index]

    def contains(self, rank: str, index: int, label: int) -> bool:
        """Whether class ``label`` lies in the taxon ``index`` of ``rank``."""
        if rank == "species":
            return index == label
        codes = next(c for r, c, _ in self.ranks if r == rank)
        return bool(codes[label] == index)

    def __call__(self, p: np.ndarray) -> Answer:
        levels = self.levels(p)
        for rank, index, prob in levels:
            if prob >= self.threshold:
                return rank, self.name(rank, index), prob
        _, best, prob = levels[0]
        return "species (unsure)", self.names[best], prob


def risk_coverage(
    probs: np.ndarray,
    labels: Sequence[int],
    coarse: RankAnswer,
    thresholds: Sequence[float] = THRESHOLDS,
) -> dict[str, list[dict[str, float]]]:
    """Coverage and accuracy at each threshold, for ``species`` answers only and for
    ``fallback`` answers (module doc). ``probs`` are the calibrated probabilities the answers
    use, one row per photo of known class ``labels``."""
    levels = [coarse.levels(p) for p in probs]
    n = max(len(levels), 1)
    curves: dict[str, list[dict[str, float]]] = {"species": [], "fallback": []}
    for t in thresholds:
        for kind, depth in (("species", 1), ("fallback", None)):
            answered = right = 0
            for found, y in zip(levels, labels):
                chosen = next((lv for lv in found[:depth] if lv[2] >= t), None)
                if chosen is not None:
                    answered += 1
                    right += coarse.contains(chosen[0], chosen[1], int(y))
            curves[kind].append(
                {
                    "threshold": float(t),
                    "coverage": answered / n,
                    "accuracy": right / answered if answered else float("nan"),
                }
            )
    return curves


def at_threshold(curves: dict[str, list[dict[str, float]]], threshold: float) -> list[dict]:
    """The curves' points at the threshold nearest ``threshold``: one row per kind."""
    rows = []
    for kind, points in curves.items():
        point = min(points, key=lambda q: abs(q["threshold"] - threshold))
        rows.append({"answers": kind, **point})
    return rows
