"""``report.md``: one file gathering the evaluation's numbers, tables and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inat_lightning.analysis.tables import to_markdown

HEADLINE = (
    "test/acc",
    "test/acc_macro",
    "test/top5",
    "test/f1_macro",
    "test/precision_macro",
    "test/recall_macro",
)


def write_report(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``out/report.md`` from an evaluation summary; returns its path."""
    m = summary["metrics"]
    lines = [
        "# Evaluation report",
        "",
        f"Checkpoint: `{summary['checkpoint']}` — {len(summary['class_names'])} classes, "
        f"chance accuracy {summary['chance_accuracy']:.3f}.",
        "",
        "## Metrics (test split)",
        "",
        to_markdown([{"metric": k, "value": m[k]} for k in HEADLINE if k in m]),
        "",
        "## Confusion matrix",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "## Look-alike species: most-confused pairs",
        "",
        "`rate` is the share of the true species' test images taken for the other; `reverse_*` is "
        "the other direction.",
        "",
        to_markdown(summary["confused_pairs"]),
        "",
        "## Per class",
        "",
        "![per-class precision and recall](per_class.png)",
        "",
        to_markdown(summary["per_class"]),
        "",
    ]
    audit = summary["audit"]
    if audit["kind"] == "cue":
        lines += [
            "## Bias audit: the spurious cue",
            "",
            "`energy_in_box`: share of Grad-CAM energy inside the cue's box; `box_area`: the box's "
            "share of the image; `energy_lift`: their ratio (1 = what a uniform map gives). "
            "`acc_cue_removed`: the same photos redrawn without the cue. "
            "`flip_rate_cue_added`: how much adding the cue to other species' photos raises the "
            "share predicted as this class (with the cue minus without).",
            "",
            to_markdown(audit["rows"]),
            "",
        ]
    else:
        lines += [
            "## CAM faithfulness (no cue boxes in this data)",
            "",
            "Confidence change of the predicted class when the CAM's most relevant pixels are "
            "removed (ROAD, 20 %) and when the image is multiplied by its CAM.",
            "",
            to_markdown(audit["rows"]),
            "",
        ]
    if summary["gradcam"]:
        lines += [
            "## Grad-CAM",
            "",
            "Each row: photo, CAM of the predicted class, CAM of the true class (mistakes only).",
            "",
        ]
        lines += [f"### {Path(p).stem}\n\n![{Path(p).stem}]({p})\n" for p in summary["gradcam"]]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
