"""The dataset's bias before any training: per class, how many photos show the cue, how much of
the photo it covers, and how many observers took them — the class whose photos are 60 % anglers
is visible before a model is trained. A section of ``report.md`` and of ``dataset_report.md``
(``python -m inat_lightning.cues report <root>``)."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence

from inat_lightning.analysis.tables import to_markdown
from inat_lightning.data.manifest import Record

#: classes a report's table lists at most (report.md, dataset_report.md: the weakest or the
#: most cued first); the CSV files hold every class
REPORT_CLASSES = 50


def dataset_report(records: Sequence[Record]) -> list[dict]:
    """Per class (and ``(all)``): photos, observations, the share of photos with a cue box,
    the mean share of the photo the box covers, the observers and the top observer's share."""
    by_class: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        by_class[r.taxon_name].append(r)
    rows = []
    for name, recs in [*sorted(by_class.items()), ("(all)", list(records))]:
        cued = [r for r in recs if r.cue_box is not None]
        areas = [
            (r.cue_x1 - r.cue_x0) * (r.cue_y1 - r.cue_y0) / (r.width * r.height)
            for r in cued
            if r.width and r.height
        ]
        observers = Counter(
            r.observer_id or r.observer for r in recs if r.observer_id or r.observer
        )
        rows.append(
            {
                "class": name,
                "photos": len(recs),
                "observations": len({r.observation_id for r in recs}),
                "cue_share": len(cued) / len(recs) if recs else 0.0,
                "cue_area": statistics.mean(areas) if areas else 0.0,
                "cue_labels": ", ".join(sorted({r.cue_label for r in cued if r.cue_label})),
                "observers": len(observers),
                "top_observer_share": observers.most_common(1)[0][1] / len(recs)
                if observers
                else 0.0,
            }
        )
    return rows


REPORT_LEGEND = (
    "`cue_share`: share of the class's photos with a cue box (imported, detected or generated); "
    "`cue_area`: the mean share of the photo the box covers; `top_observer_share`: the share of "
    "the class's photos taken by its most prolific observer. A class far above the others in "
    "`cue_share` can be learned from the cue instead of the organism; one dominated by an "
    "observer, from that person's camera and places."
)


def flagged(rows: Sequence[dict], factor: float = 3.0, floor: float = 0.2) -> list[str]:
    """Classes whose ``cue_share`` is at least ``floor`` and ``factor`` times the others'."""
    classes = [r for r in rows if r["class"] != "(all)"]
    out = []
    for r in classes:
        others = [o["cue_share"] for o in classes if o is not r]
        rest = statistics.mean(others) if others else 0.0
        if r["cue_share"] >= floor and r["cue_share"] >= factor * max(rest, 1e-9):
            out.append(r["class"])
    return out


def report_markdown(rows: Sequence[dict]) -> list[str]:
    """The "Bias in the data" section (for ``report.md`` and ``dataset_report.md``)."""
    lines = ["## Bias in the data (before any training)", "", REPORT_LEGEND, ""]
    for name in flagged(rows):
        share = next(r["cue_share"] for r in rows if r["class"] == name)
        lines += [
            f"- **{name}: {share:.0%} of its photos show the cue** — far above the others.",
            "",
        ]
    shown = list(rows)
    if len(shown) > REPORT_CLASSES + 1:  # the most cued classes, and the (all) row
        classes = sorted((r for r in rows if r["class"] != "(all)"), key=lambda r: -r["cue_share"])
        shown = [*classes[:REPORT_CLASSES], *(r for r in rows if r["class"] == "(all)")]
        lines += [f"The {REPORT_CLASSES} classes with the largest cue share of {len(classes)}.", ""]
    return [*lines, to_markdown(shown), ""]
