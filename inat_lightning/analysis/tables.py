"""Per-class metrics and the most-confused species pairs (look-alikes), from sparse confusion
counts (:class:`~inat_lightning.models.confusion.Confusion`)."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from inat_lightning.analysis.results import to_record
from inat_lightning.data.taxonomy import Taxonomy

if TYPE_CHECKING:  # tables are also written where torch is not imported (the demo, the scrape)
    from inat_lightning.models.confusion import Confusion


def per_class_table(
    confusion: Confusion, class_names: Sequence[str], train_counts: Sequence[int] | None = None
) -> list[dict]:
    """One row per class: support, predicted count, precision, recall (the species' accuracy),
    F1, and ``train_images`` when ``train_counts`` is given. Precision/F1 are 0 when undefined,
    as in scikit-learn's ``zero_division=0``. ``O(K + cells)``."""
    support, predicted = confusion.support, confusion.predicted
    precision, recall, f1 = confusion.precision_recall_f1()
    return [
        {
            "class": name,
            "support": int(support[i]),
            "predicted": int(predicted[i]),
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            **({"train_images": int(train_counts[i])} if train_counts is not None else {}),
        }
        for i, name in enumerate(class_names)
    ]


def weakest_first(table: list[dict]) -> list[dict]:
    """Per-class rows sorted by F1, then by training images: the weakest, rarest species on
    top."""
    return sorted(table, key=lambda r: (r["f1"], r.get("train_images", 0), r["class"]))


def most_confused_pairs(
    confusion: Confusion,
    class_names: Sequence[str],
    top: int = 10,
    taxonomy: Taxonomy | None = None,
) -> list[dict]:
    """The ``top`` largest off-diagonal cells: species A (true) taken for species B (predicted),
    with the count, the rate (share of A's images) and the reverse direction B → A; with a
    ``taxonomy``, also ``common_rank``, the lowest rank the two share (``genus``: congeners, a
    forgivable look-alike; ``—``: unrelated at every recorded rank). ``O(cells log cells)``."""
    support = confusion.support
    mistakes = confusion.mistakes()
    counts = {(i, j): n for n, i, j in mistakes}
    return [
        {
            "true": class_names[i],
            "predicted": class_names[j],
            "count": int(n),
            "rate": float(n / support[i]) if support[i] else 0.0,
            "reverse_count": int(counts.get((j, i), 0)),
            "reverse_rate": float(counts.get((j, i), 0) / support[j]) if support[j] else 0.0,
            **({"common_rank": taxonomy.common_rank(i, j) or "—"} if taxonomy else {}),
        }
        for n, i, j in mistakes[:top]
    ]


def write_csv(path: str | Path, rows: list[dict], columns: Sequence[str] | None = None) -> None:
    """``rows`` under ``columns`` (default: the first row's keys); a key a row lacks is an empty
    cell. Rows may be typed results (:mod:`inat_lightning.analysis.results`). Without rows and
    columns, an empty file."""
    path, rows = Path(path), [to_record(r) for r in rows]
    with path.open("w", newline="", encoding="utf-8") as f:
        if not rows and columns is None:
            return
        w = csv.DictWriter(f, fieldnames=list(columns or rows[0]), restval="")
        w.writeheader()
        w.writerows(rows)


def to_markdown(rows: list[dict], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table (TensorBoard's text plugin renders it too)."""
    if not rows:
        return "_(none)_"
    cols = list(rows[0])

    def cell(v) -> str:
        return f"{v:.{digits}f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)
