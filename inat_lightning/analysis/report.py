"""``report.md``: one file gathering the evaluation's numbers, tables and pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from inat_lightning import run_files
from inat_lightning.analysis.data_bias import REPORT_CLASSES, flagged, report_markdown
from inat_lightning.analysis.tables import to_markdown
from inat_lightning.models.metric_names import SCALARS, key

FIGURE_CAPTIONS = {
    "confusion_matrix": "confusion matrix",
    "per_class": "per-class precision and recall",
    "long_tail": "accuracy against training images",
    "reliability": "reliability diagram",
}


def _figure(name: str, summary: dict[str, Any], heading: str = "") -> list[str]:
    """A figure's Markdown lines (under ``heading``), or none when no callback saved it."""
    path = summary.get("figures", {}).get(name)
    if not path:
        return []
    return [*([f"## {heading}", ""] if heading else []), f"![{FIGURE_CAPTIONS[name]}]({path})", ""]


def _taxonomy(summary: dict[str, Any]) -> list[str]:
    """The "Taxonomy" section: accuracy one and two ranks up, the share of mistakes between
    congeners, or a note that the dataset has none."""
    found = summary.get("taxonomy")
    lines = ["## Taxonomy", ""]
    if not found:
        return lines + [
            "No taxonomy for these classes (no `taxa.csv` beside the manifest): metrics are at "
            "species level only. `scrape.py` writes it (docs/collect.md).",
            "",
        ]
    m = summary["metrics"]
    rows = [{"level": "species", "accuracy": m.get(key("test", "acc"), float("nan"))}]
    rows += [
        {"level": name.removeprefix("acc_"), "accuracy": value}
        for name, value in found["metrics"].items()
        if name.startswith("acc_")
    ]
    lines += [
        f"{found['classes_with_lineage']} of {len(summary['class_names'])} classes have a "
        "lineage. A prediction counts at a rank when the predicted species shares that rank "
        "with the truth.",
        "",
        to_markdown(rows),
        "",
    ]
    share = found["metrics"].get("within_genus_share")
    if share is not None:
        lines += [
            f"**{share:.0%} of the mistakes stay within the genus** (look-alike congeners); the "
            "rest confuse unrelated species — a data or model problem rather than biology. "
            "`common_rank` in the look-alike table says which is which.",
            "",
        ]
    return lines


def _calibration(summary: dict[str, Any]) -> list[str]:
    """The "Calibrated confidence" section: ECE and NLL before and after temperature scaling."""
    found = summary.get("calibration")
    if not found:
        return []
    t = found["temperature"]
    note = (
        "no temperature was fitted (trained with `calibrate=false`, or an older checkpoint)"
        if t == 1.0
        else f"temperature {t:.3f}, fitted on the validation split after training"
    )
    rows = [
        {"softmax": "as trained", "ECE": found["ece_before"], "NLL": found["nll_before"]},
        {"softmax": f"/ T = {t:.3f}", "ECE": found["ece_after"], "NLL": found["nll_after"]},
    ]
    return [
        "## Calibrated confidence",
        "",
        f"Expected calibration error (ECE, 15 bins) of the test split: {note}. A "
        "well-calibrated 0.8 is right 80 % of the time; `predict.py` flags answers below "
        "`uncertain_below`.",
        "",
        to_markdown(rows),
        "",
        *_figure("reliability", summary),
    ]


def audit_findings(audit: dict[str, Any]) -> list[str]:
    """One sentence per class the cue audit judged (enough cued photos): verdict and measures."""
    if audit.get("kind") != "cue":
        return []
    return [
        f"{r['class']}: {r['verdict']} (accuracy drop beyond the hole control "
        f"{r['acc_drop']:+.2f}, CAM energy in the cue box {r['energy_lift']:.1f}x its area"
        + (
            f"; the cue pasted onto {r['lookalike']} photos: {r['flip_rate_lookalike']:+.0%} "
            "taken for it)"
            if r.get("lookalike")
            else ")"
        )
        for r in audit["rows"]
        if r["verdict"] and r["cued_images"] >= audit.get("min_images", 0)
    ]


def _findings(summary: dict[str, Any]) -> list[str]:
    """The bias found, first: classes whose photos carry the cue, and the audit's verdicts."""
    rows = summary.get("dataset") or []
    share = {r["class"]: r["cue_share"] for r in rows}
    found = [
        f"- Bias in the data: **{name}**: {share[name]:.0%} of its photos show the cue."
        for name in flagged(rows)
    ]
    found += [f"- Bias audit: **{line}**." for line in audit_findings(summary["audit"])]
    found += [f"- Discovery: **{line}**." for line in discovery_findings(summary.get("discovery"))]
    return ["## Findings", "", *found, ""] if found else []


def _near_duplicates(found: dict[str, Any] | None) -> list[str]:
    """The split's near-duplicate clusters: how many, the leak count, a few side by side."""
    if not found:
        return []
    lines = [
        "## Near-duplicate photos",
        "",
        f"{found['clusters']} clusters of near-duplicate photos ({found['photos']} photos: "
        f"perceptual hashes at most {found['max_distance']} bits apart), each kept in one split; "
        f"test photos with a copy in train: {found['test_photos_with_a_copy_in_train']}.",
        "",
    ]
    if found.get("figure"):
        lines += [f"![the largest clusters, one per row]({found['figure']})", ""]
    return lines


def _place_prior(found: dict[str, Any] | None) -> list[str]:
    """The "Where and when" section: top-1 of vision alone, the prior alone and the two fused."""
    if not found:
        return []
    rows = [
        {"answer from": "the photo (vision)", "top-1": found["top1_vision"]},
        {"answer from": "place and date only (prior)", "top-1": found["top1_prior"]},
        {"answer from": "both (fused)", "top-1": found["top1_fused"]},
    ]
    return [
        "## Where and when: the place prior",
        "",
        f"A prior p(species | place, season) fitted on {found['prior_photos']} training photos' "
        f"coordinates and dates, fused with the vision model (weight {found['weight']:g}; "
        f"{found['with_place_or_date']} of {found['photos']} test photos have a place or a date). "
        f"**Fusing changes top-1 accuracy by {found['gain']:+.3f}.**",
        "",
        to_markdown(rows),
        "",
        "The classes it changes most (look-alikes that live apart gain):",
        "",
        to_markdown(found["classes"]),
        "",
    ]


def _coverage(found: dict[str, Any] | None) -> list[str]:
    """The "Answers at a coarser rank" section: the risk–coverage plot and its table."""
    if not found:
        return []
    return [
        "## Saying less when unsure: risk-coverage",
        "",
        "Each point: answer the photos whose top probability reaches a threshold (species only), "
        "or answer each photo at the finest rank whose summed probability does (species, else "
        "genus, else family: `predict.py`'s `answer`). At "
        f"`uncertain_below={found['threshold']:g}`:",
        "",
        to_markdown(found["at_threshold"]),
        "",
        f"![accuracy against coverage]({found['figure']})",
        "",
    ]


def _open_set(found: dict[str, Any] | None) -> list[str]:
    """The "Not one of mine" section: out-of-set detection on held-out species."""
    if not found:
        return []
    rule = found.get("rule")
    lines = ["## Not one of mine: out-of-set photos", ""]
    if rule:
        lines += [
            f"`predict.py` flags `not_in_classes` when {rule['score']} is below "
            f"{rule['threshold']:.4f} (fitted to accept {rule['accept']:.0%} of the known "
            "species' validation photos); it accepts "
            f"{found.get('known_accepted', float('nan')):.1%} of the test photos.",
            "",
        ]
    if "auroc" in found:
        rows = [{"score": k, "AUROC": v} for k, v in found["auroc"].items()]
        far = found.get("false_accept_rate")
        lines += [
            f"{found['held_out_photos']} photos of species held out of training "
            "(`data.held_out_classes`) against the test photos:"
            + (
                f" **{far:.1%} of them are accepted as a known species**."
                if far is not None
                else ""
            ),
            "",
            to_markdown(rows),
            "",
        ]
        if found.get("figure"):
            lines += [f"![out-of-set scores]({found['figure']})", ""]
    else:
        lines += ["No held-out species to measure it on (`data.held_out_classes=[...]`).", ""]
    return lines


def _per_class(summary: dict[str, Any]) -> list[str]:
    rows = summary["per_class"]
    more = (
        f" The {REPORT_CLASSES} weakest of {len(rows)}; `per_class.csv` holds every class."
        if len(rows) > REPORT_CLASSES
        else ""
    )
    return [
        "## Per class",
        "",
        "Weakest first (by F1), then rarest; `recall` is the species' accuracy, `train_images` its "
        "training photos." + more,
        "",
        *_figure("per_class", summary),
        to_markdown(rows[:REPORT_CLASSES]),
        "",
    ]


def _audit(audit: dict[str, Any]) -> list[str]:
    lines = [f"## {audit['title']}", "", audit["legend"], "", to_markdown(audit["rows"]), ""]
    if audit.get("gallery"):
        lines += [
            "The photos whose prediction depends most on the cue (largest confidence drop when "
            "it is removed): each row, the photo with the cue outlined and its cue-removed "
            "version, with the CAM of the predicted class in red.",
            "",
            f"![the photos that depend most on the cue]({audit['gallery']})",
            "",
        ]
    if audit.get("skipped_images"):
        lines += [f"{len(audit['skipped_images'])} unreadable test images were left out.", ""]
    return lines


def _discovery(found: dict[str, Any] | None) -> list[str]:
    """The "Discovered cues" section: recurring CAM regions, ranked by their evidence."""
    if found is None:
        return []
    lines = [
        "## Discovered cues (nobody boxed them)",
        "",
        f"{found['examined_photos']} test photos of {found['examined_classes']} classes: the "
        "regions where each photo's CAM concentrates, described by the model's own features and "
        "clustered across photos. Per cluster: the share of its class's photos it is on "
        "against the other classes' (`share_in_class`, `share_elsewhere`), how much more "
        "often the class is right on its photos that show the region than on those that do not "
        "(`presence_gap`, with its one-sided p-value by Fisher's exact test, `presence_p`), "
        "the accuracy the class loses when the region is removed beyond a "
        "same-size hole elsewhere (`acc_drop`), "
        "and the share of the look-alike's photos taken for the class once the region is "
        "pasted on them (`transplant_flip`); and how well the region's look, found anywhere "
        "in a photo by those features, tells the photos it is on from the look-alike's "
        "photos (`look_separation`, a ROC AUC: 0.5 when the look-alike shows it as well).",
        "",
    ]
    if not found["rows"]:
        return lines + ["No region recurs across photos.", ""]
    # a p-value in significant digits: to three decimals 7.6e-08 would read 0.000
    p = "presence_p"
    table = [{**r, p: None if r.get(p) is None else format(r[p], ".2g")} for r in found["rows"]]
    lines += [to_markdown(table), ""]
    if found.get("gallery"):
        lines += [
            "Per ranked cluster: four of its regions, then two photos under their red CAM with "
            "the region outlined.",
            "",
            f"![discovered cues]({found['gallery']})",
            "",
        ]
    if found.get("boxes"):
        lines += [
            "The suspected regions are in `discovered_boxes.csv`: `python -m inat_lightning.cues "
            "import-csv <data root> discovered_boxes.csv` puts them into the manifest, and the "
            "next `evaluate.py` measures them with the cue audit.",
            "",
        ]
    return lines


def _measured(value: float | None, spec: str) -> str:
    """``value`` formatted, or "not measured" (a counterfactual that could not run: no photo of
    the look-alike among those examined)."""
    return "not measured" if value is None else format(value, spec)


def discovery_findings(found: dict[str, Any] | None) -> list[str]:
    """One sentence per suspected shortcut that discovery found (the report's findings, the
    demo's and ``cues discover``'s lines)."""
    return [
        f"{r['class']}: {r['verdict']} (#{r['rank']} in discovered_cues.png) — a region on "
        f"{r['photos']} of its examined photos ({r['share_in_class']:.0%}; "
        f"{r['share_elsewhere']:.0%} of the others'), accuracy on its photos with it "
        f"{_measured(r['presence_gap'], '+.2f')} over those without "
        f"(p {_measured(r.get('presence_p'), '.2g')}), drop when removed beyond "
        f"the hole control {_measured(r['acc_drop'], '+.2f')}, pasted onto "
        f"{r['lookalike'] or 'the look-alike'} photos: "
        f"{_measured(r['transplant_flip'], '+.0%')} more taken for it; its look sets its "
        f"photos apart from the look-alike's at AUC {_measured(r.get('look_separation'), '.2f')}"
        for r in (found or {}).get("rows", [])
        if r["verdict"]
    ]


def _gradcam(galleries: list[str]) -> list[str]:
    if not galleries:
        return []
    return [
        "## Grad-CAM",
        "",
        "Each row: photo, CAM of the predicted class, CAM of the true class (mistakes only).",
        "",
        *(f"### {Path(p).stem}\n\n![{Path(p).stem}]({p})\n" for p in galleries),
    ]


def write_report(out: Path, summary: dict[str, Any]) -> Path:
    """Write ``out/report.md`` from an evaluation summary; returns its path."""
    m = summary["metrics"]
    lines = [
        "# Evaluation report",
        "",
        f"Checkpoint: `{summary['checkpoint']}` — {len(summary['class_names'])} classes, "
        f"chance accuracy {summary['chance_accuracy']:.3f}.",
        "",
        *_findings(summary),
        "## Metrics (test split)",
        "",
        to_markdown(
            [{"metric": k, "value": m[k]} for k in (key("test", s) for s in SCALARS) if k in m]
        ),
        "",
        *_figure("confusion_matrix", summary, heading="Confusion matrix"),
        "## Look-alike species: most-confused pairs",
        "",
        "`rate` is the share of the true species' test images taken for the other; `reverse_*` is "
        "the other direction.",
        "",
        to_markdown(summary["confused_pairs"]),
        "",
        *_taxonomy(summary),
        *_calibration(summary),
        *_place_prior(summary.get("place_prior")),
        *_coverage(summary.get("coverage")),
        *_open_set(summary.get("open_set")),
        *_per_class(summary),
        *_figure("long_tail", summary, heading="The long tail"),
        *(report_markdown(summary["dataset"]) if summary.get("dataset") else []),
        *_near_duplicates(summary.get("near_duplicates")),
        *_audit(summary["audit"]),
        *_discovery(summary.get("discovery")),
        *_gradcam(summary["gradcam"]),
    ]
    path = out / run_files.REPORT
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
