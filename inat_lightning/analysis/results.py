"""Typed results of the analysis and their one serialisation: an audit row, a photo's or an
observation's prediction, an evaluation summary. Code passes these dataclasses around;
:func:`to_record` turns one into the plain dict written to CSV, JSON and reports (``class_``
becomes ``class``; optional measures that were not taken are left out, not written as empty)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

#: fields written only when measured (``None``: not taken, left out of the record)
_OPTIONAL = "optional"


def _optional(default: Any = None) -> Any:
    return field(default=default, metadata={_OPTIONAL: True})


@dataclass
class CueAuditRow:
    """One class of the cue audit (see :class:`~inat_lightning.analysis.audit.CueAudit`)."""

    class_: str
    cued_images: int
    energy_in_box: float
    box_area: float
    energy_lift: float
    acc_with_cue: float
    acc_cue_removed: float
    acc_hole_control: float
    acc_drop: float
    flip_rate_cue_added: float
    lookalike: str
    flip_rate_lookalike: float
    acc_cue_redrawn: float | None = _optional()  # synthetic data: the generator's redraws
    acc_drop_redrawn: float | None = _optional()
    flip_rate_redrawn: float | None = _optional()
    verdict: str = ""


@dataclass
class FaithfulnessRow:
    """One class of the CAM faithfulness audit (data without cue boxes)."""

    class_: str
    images: int
    road_most_relevant_first: float
    cam_mult_confidence_change: float


@dataclass
class PhotoPrediction:
    """One input photo of ``predict.py``; an unreadable one has ``status="unreadable"`` and no
    answer."""

    photo_id: str
    path: str
    observation_id: str
    status: str = "ok"
    prediction: str | None = None
    probability: float | None = None
    uncertain: bool | None = None
    top_k: str | None = None
    answer_rank: str | None = None  # species, else the genus or family that reaches the bar
    answer: str | None = None
    answer_probability: float | None = None
    observation_prediction: str | None = None
    not_in_classes: bool | None = None  # scored below the checkpoint's out-of-set threshold
    true: str | None = None
    cue_share: float | None = None
    looks_at_cue: bool | None = None
    explanation: str | None = None


@dataclass
class ObservationPrediction:
    """One observation of ``predict.py``: its photos fused."""

    observation_id: str
    photos: int
    prediction: str
    probability: float
    uncertain: bool
    top_k: str
    true: str | None = None
    answer_rank: str | None = None
    answer: str | None = None
    answer_probability: float | None = None
    not_in_classes: bool | None = None  # every readable photo of it is out of set


@dataclass
class EvaluationSummary:
    """What ``evaluate.py`` found: ``metrics.json``, the input of ``report.md``."""

    checkpoint: str
    metrics: dict[str, float]
    class_names: list[str]
    chance_accuracy: float
    test_confusion: dict[str, Any]  # sparse: num_classes and cells [true, predicted, count]
    taxonomy: dict[str, Any] | None
    dataset: list[dict[str, Any]]
    calibration: dict[str, Any] | None
    per_class: list[dict[str, Any]]
    confused_pairs: list[dict[str, Any]]
    figures: dict[str, str]
    gradcam: list[str]
    audit: dict[str, Any] | None = None
    near_duplicates: dict[str, Any] | None = None  # the split's clusters (data/near_duplicates)
    place_prior: dict[str, Any] | None = None  # vision-only, prior-only and fused top-1
    coverage: dict[str, Any] | None = None  # risk–coverage of species-only and fallback answers
    open_set: dict[str, Any] | None = None  # out-of-set detection on held-out species
    discovery: dict[str, Any] | None = None  # cues found in the test photos nobody boxed


def columns(kind: type) -> list[str]:
    """The CSV header of a result type, in field order."""
    return [f.name.rstrip("_") for f in fields(kind)]


def to_record(result: Any) -> Any:
    """A result (or a list or dict of them) as plain JSON-ready values."""
    if is_dataclass(result) and not isinstance(result, type):
        out = {}
        for f in fields(result):
            value = getattr(result, f.name)
            if value is None and f.metadata.get(_OPTIONAL):
                continue
            out[f.name.rstrip("_")] = to_record(value)
        return out
    if isinstance(result, dict):
        return {k: to_record(v) for k, v in result.items()}
    if isinstance(result, list | tuple):
        return [to_record(v) for v in result]
    return result


def write_json(path: Path, result: Any) -> Path:
    """``result`` serialised (:func:`to_record`) to ``path``, atomically."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(json.dumps(to_record(result), indent=2), encoding="utf-8")
    tmp.replace(path)
    return path
