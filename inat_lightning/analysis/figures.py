"""Figures that people would rather look at than read. Rendered with matplotlib's Agg backend,
so they work without a display."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from inat_lightning.data.taxonomy import Taxonomy  # noqa: E402
from inat_lightning.models.confusion import Confusion  # noqa: E402


def most_confused_classes(confusion: Confusion, k: int) -> np.ndarray:
    """Indices of the ``k`` classes involved in the most errors (as true or predicted class),
    in their original order: the block of a large confusion matrix worth showing."""
    return np.sort(np.argsort(-confusion.involvement(), kind="stable")[:k])


def _write_cells(ax: Any, norm: np.ndarray) -> None:
    """Each visible share written in its cell (white on dark cells)."""
    for (i, j), share in np.ndenumerate(norm):
        if share >= 0.005:
            colour = "white" if share > 0.5 else "black"
            ax.text(j, i, f"{share:.2f}", ha="center", va="center", fontsize=7, color=colour)


def _frame_genera(ax: Any, taxonomy: Taxonomy, keep: np.ndarray) -> None:
    """A frame around each genus of more than one drawn class (classes in lineage order)."""
    for start, end, genus in taxonomy.groups([int(c) for c in keep]):
        if genus and end - start > 1:
            corner, side = (start - 0.5, start - 0.5), end - start
            frame = Rectangle(corner, side, side, fill=False, edgecolor="#c44e52", linewidth=1.5)
            ax.add_patch(frame)


def confusion_matrix_figure(
    confusion: Confusion,
    class_names: Sequence[str],
    max_classes: int = 30,
    title: str = "",
    taxonomy: Taxonomy | None = None,
) -> Figure:
    """Row-normalised confusion matrix (rows: true class, columns: predicted class).

    With more than ``max_classes`` classes only the most-confused block is drawn (the title says
    so), built from the sparse counts: a 10,000-class matrix is unreadable (and 800 MB), its
    confused block is neither. With a ``taxonomy``, classes are ordered by lineage and each
    genus is framed: mistakes inside a frame are between congeners.
    """
    k = confusion.num_classes
    keep = np.arange(k) if k <= max_classes else most_confused_classes(confusion, max_classes)
    if taxonomy is not None:
        rank = {c: pos for pos, c in enumerate(taxonomy.order())}
        keep = np.array(sorted(keep, key=lambda c: rank[int(c)]), dtype=int)
    cm = confusion.dense(keep).astype(float)
    # normalised by every photo of the class, not only the block's
    rows = confusion.support[keep].astype(float)[:, None]
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    names = [class_names[i] for i in keep]
    n = len(keep)
    side = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(side + 1.5, side))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), names, rotation=90, fontsize=8 if n > 15 else 9)
    ax.set_yticks(range(n), names, fontsize=8 if n > 15 else 9)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        _write_cells(ax, norm)
    if taxonomy is not None:
        _frame_genera(ax, taxonomy, keep)
    subset = "" if n == k else f" — {n} most-confused of {k} classes"
    if taxonomy is not None:
        subset += " — ordered by taxonomy, genera framed"
    ax.set_title((title or "confusion matrix (row-normalised)") + subset)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    return fig


def per_class_bars(table: list[dict], max_classes: int = 40) -> Figure:
    """Precision and recall per class, worst F1 first (above ``max_classes``, only the worst)."""
    rows = sorted(table, key=lambda r: r["f1"])[:max_classes]
    n = len(rows)
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.32 * n))
    y = np.arange(n)
    ax.barh(y - 0.2, [r["precision"] for r in rows], height=0.4, label="precision", color="#4c72b0")
    ax.barh(y + 0.2, [r["recall"] for r in rows], height=0.4, label="recall", color="#dd8452")
    ax.set_yticks(y, [f"{r['class']} (n={r['support']})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("score")
    shown = "" if n == len(table) else f" — {n} worst of {len(table)}"
    ax.set_title("per-class precision and recall, worst F1 first" + shown)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def long_tail_figure(table: list[dict], label: int = 8) -> Figure:
    """Each species' accuracy (recall) against its number of training images, log-scaled when
    the counts span a factor of 10 or more; the ``label`` weakest are named. Rare species that
    the model fails are the long tail worth more photos."""
    counts = np.array([max(r["train_images"], 1) for r in table], dtype=float)
    recall = np.array([r["recall"] for r in table])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(counts, recall, s=22, color="#4c72b0", alpha=0.8)
    if counts.max() >= 10 * counts.min():
        ax.set_xscale("log")
    for i in np.argsort(recall, kind="stable")[:label]:
        ax.annotate(
            table[i]["class"],
            (counts[i], recall[i]),
            fontsize=7,
            xytext=(3, 3),
            textcoords="offset points",
        )
    ax.set_ylim(-0.03, 1.03)
    ax.set_xlabel("training images of the species")
    ax.set_ylabel("accuracy on the species (recall)")
    ax.set_title("the long tail: accuracy against training images")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def reliability_figure(curves: dict[str, tuple[list[dict], float]]) -> Figure:
    """Reliability diagram: accuracy against confidence per bin, one curve per name
    (``{"before": (bins, ece), "after": …}``); the diagonal is perfect calibration, points under
    it are over-confident."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect")
    for (name, (bins, error)), color in zip(curves.items(), ("#c44e52", "#4c72b0", "#55a868")):
        conf = [b["confidence"] for b in bins]
        acc = [b["accuracy"] for b in bins]
        size = [10 + 200 * b["count"] / max(sum(x["count"] for x in bins), 1) for b in bins]
        ax.plot(conf, acc, color=color, linewidth=1.5, label=f"{name} (ECE {error:.3f})")
        ax.scatter(conf, acc, s=size, color=color, alpha=0.7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (top-1 probability)")
    ax.set_ylabel("accuracy")
    ax.set_title("reliability: below the diagonal = over-confident")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def risk_coverage_figure(curves: dict[str, list[dict]], threshold: float) -> Figure:
    """Accuracy against coverage, one curve per kind of answer (species only, taxonomic
    fallback), the points at ``threshold`` marked: further up and right is better."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    labels = {"species": "species only", "fallback": "species, else genus, else family"}
    for (kind, points), color in zip(curves.items(), ("#4c72b0", "#55a868")):
        pts = [q for q in points if q["coverage"] > 0]
        ax.plot(
            [q["coverage"] for q in pts],
            [q["accuracy"] for q in pts],
            color=color,
            marker=".",
            label=labels.get(kind, kind),
        )
        mark = min(points, key=lambda q: abs(q["threshold"] - threshold))
        if mark["coverage"] > 0:
            ax.scatter([mark["coverage"]], [mark["accuracy"]], s=80, color=color, zorder=3)
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("coverage (share of photos answered)")
    ax.set_ylabel("accuracy of the answers (at the rank given)")
    ax.set_title(f"risk-coverage (large dots: threshold {threshold:g})")
    ax.legend(loc="lower left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def score_histogram(scores: dict[str, np.ndarray], threshold: float, score: str) -> Figure:
    """Histograms of an out-of-set score for known and held-out species, with the threshold
    below which a photo is flagged ``not_in_classes``."""
    fig, ax = plt.subplots(figsize=(6, 4))
    found = np.concatenate([v for v in scores.values() if len(v)] or [np.zeros(1)])
    bins = np.linspace(float(found.min()), float(found.max()) + 1e-6, 31)
    for (name, values), color in zip(scores.items(), ("#4c72b0", "#c44e52")):
        ax.hist(values, bins=bins, alpha=0.6, color=color, label=f"{name} ({len(values)})")
    ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set_xlabel(f"{score} (higher: more like a trained species)")
    ax.set_ylabel("photos")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save(fig: Figure, path, close: bool = True) -> None:
    """Write a figure as PNG and (``close``) free it."""
    fig.savefig(path, dpi=110)
    if close:
        plt.close(fig)
