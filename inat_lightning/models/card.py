"""The model card (``MODEL.md``): what a checkpoint is, what it learned from and under which
licences, how well it did, what the bias audit found and how to use it — written beside the
best checkpoint after training, beside an export, and by ``evaluate.py`` with the audit's
findings. Everything comes from the checkpoint itself (it travels alone), plus the findings of
the analysis when there are some."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from inat_lightning import __version__
from inat_lightning.data.card import licence_warnings

CARD_NAME = "MODEL.md"
#: the checkpoint entry naming the inat-lightning release that wrote it
VERSION_KEY = "inat_lightning_version"


def network(hp: Mapping[str, Any]) -> str:
    """``ResNet101``, or the name of another backbone (as registered)."""
    name = hp.get("backbone") or "resnet"
    return f"ResNet{hp.get('depth', '?')}" if name == "resnet" else str(name)[:40]


def written_by(checkpoint: Mapping[str, Any]) -> str:
    """The release that wrote ``checkpoint`` (a file from anyone: a plain version string, or
    ``unknown`` — one before 0.2.0 recorded none)."""
    found = checkpoint.get(VERSION_KEY)
    return found if isinstance(found, str) and re.fullmatch(r"[\w.+-]{1,40}", found) else "unknown"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(c) for c in row) + " |" for row in rows),
    ]


def check_card_inputs(fingerprint: object, results: object) -> None:
    """A checkpoint's data fingerprint and results hold what :func:`card_text` formats (the
    file may come from anyone: a text where a number belongs would break the card after the
    work, at the end of ``evaluate.py``); a ``ValueError`` naming the part."""
    data, found = _mapping(fingerprint, "data_fingerprint"), _mapping(results, "results")
    for part in ("split", "train_images"):
        _mapping(data.get(part), f"data_fingerprint.{part}")
    _numbers(data.get("licences"), "data_fingerprint.licences")
    _numbers(found.get("metrics"), "results.metrics")
    calibration = _mapping(found.get("calibration"), "results.calibration")
    needed = ("val_ece_before", "val_ece_after", "temperature") if calibration else ()
    _numbers(calibration, "results.calibration", needed)
    overrides = found.get("overrides")
    if overrides is not None and (
        not isinstance(overrides, list) or not all(isinstance(o, str) for o in overrides)
    ):
        raise ValueError("results.overrides: must be a list of texts")


def _mapping(value: object, where: str) -> Mapping[str, Any]:
    """``value``, ``{}`` when absent; a ``ValueError`` naming ``where`` unless a mapping."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: must be a mapping")
    return value


def _numbers(value: object, where: str, needed: Sequence[str] = ()) -> None:
    """``value`` (absent, or a mapping of texts to numbers holding ``needed``)."""
    found = _mapping(value, where)
    ok = all(k in found for k in needed) and all(
        isinstance(k, str) and not isinstance(v, bool) and isinstance(v, int | float)
        for k, v in found.items()
    )
    if not ok:
        with_keys = f" (with {', '.join(needed)})" if needed else ""
        raise ValueError(f"{where}: must map names to numbers{with_keys}")


def _extras(checkpoint: dict[str, Any]) -> list[str]:
    """What the checkpoint carries beyond the network: the place prior, the out-of-set rule."""
    lines = []
    prior = checkpoint.get("prior")
    if isinstance(prior, dict):
        lines.append(
            f"- a place prior p(species | place, season) fitted on {prior.get('photos', '?')} "
            "training photos' coordinates and dates, fused with the photo's answer when "
            "`predict.py` knows where and when (`places=`, the manifest, EXIF)"
        )
    rule = checkpoint.get("open_set")
    if isinstance(rule, dict):
        lines.append(
            f"- photos whose {rule.get('score')} is below {rule.get('threshold', 0):.4f} are "
            f"flagged `not_in_classes` (the threshold keeps {rule.get('accept', 0):.0%} of the "
            "known species' validation photos)"
        )
    return lines


def card_text(
    checkpoint: dict[str, Any], name: str, audit_findings: Sequence[str] | None = None
) -> str:
    """The card of ``checkpoint`` (a dict read by
    :func:`~inat_lightning.models.checkpoint.read_checkpoint`), called ``name`` in the usage
    lines."""
    hp = checkpoint["hyper_parameters"]
    results = checkpoint.get("results") or {}
    counts = (hp.get("data_fingerprint") or {}).get("train_images") or {}
    names = hp.get("class_names") or []
    lines = [
        f"# Model card: {name}",
        "",
        f"{network(hp)} species classifier, {len(names)} classes"
        + (f", trained from `{hp['weights']}` weights" if hp.get("weights") else ""),
        "",
        f"Written by inat-lightning {written_by(checkpoint)}; this card by {__version__}.",
        "",
        "## How to use it",
        "",
        "```bash",
        f"python predict.py ckpt_path={name} inputs=photos/      # top-k, calibrated, explained",
        f"python predict.py ckpt_path={name} inputs=photos/ export=true   # + torch.export",
        "```",
        "",
        "The checkpoint carries its preprocessing, classes, lineages and temperature: it needs "
        "no run folder.",
        "",
        *_input(checkpoint),
        "## Classes and their training images",
        "",
        *_table(["class", "train images"], [(c, counts.get(c, "?")) for c in names]),
        "",
        *_data(hp.get("data_fingerprint") or {}),
        *_results(results),
        "",
        "## Bias audit",
        "",
        *(
            [f"- {f}" for f in audit_findings]
            if audit_findings
            else ["Not audited here (or nothing judged): `python evaluate.py ckpt_path=…` runs it."]
        ),
        "",
        "## How it was trained",
        "",
    ]
    overrides = results.get("overrides")
    lines += (
        ["```bash", "python train.py " + " ".join(overrides), "```"]
        if overrides is not None
        else ["Not recorded."]
    )
    return "\n".join(lines) + "\n"


def _input(checkpoint: dict[str, Any]) -> list[str]:
    """How a photo becomes the network's input, and the softmax temperature."""
    spec = checkpoint["hyper_parameters"].get("input_spec") or {}
    made = (
        f"- resize the short side to {round(spec['image_size'] / spec['crop_ratio'])} px, "
        f"centre-crop {spec['image_size']} px, {spec['channels']}, values / 255, "
        f"normalised with mean {spec['mean']} and std {spec['std']}"
        if spec
        else "- not recorded (a checkpoint made before input specs)"
    )
    return [
        "## Input",
        "",
        made,
        f"- softmax temperature {float(checkpoint.get('temperature', 1.0)):.3f} "
        "(fitted on the validation split; 1 = not calibrated)",
        *_extras(checkpoint),
        "",
    ]


def _data(data: dict[str, Any]) -> list[str]:
    """What the model learned from (its data fingerprint)."""
    if not data:
        return ["## Data", "", "- not recorded (a checkpoint made before data fingerprints)"]
    split = data.get("split", {})
    licences = data.get("licences", {})
    return [
        "## Data",
        "",
        f"- {data.get('images', '?')} images under `{data.get('root', '?')}` "
        f"(records sha256 `{str(data.get('records_sha256', ''))[:16]}…`)",
        f"- split by {split.get('group_by', '?')}, ratios {split.get('ratios')}, "
        f"seed {split.get('seed')}"
        + (f", fold {split['fold']} of {split['folds']}" if split.get("folds") else ""),
        "- licences: " + ", ".join(f"{code or 'none given'} {n}" for code, n in licences.items()),
        *(f"- **{w}**" for w in licence_warnings(licences)),
    ]


def _results(results: dict[str, Any]) -> list[str]:
    """The test metrics and the calibration kept with the checkpoint."""
    metrics = results.get("metrics") or {}
    lines = ["", "## Test results", ""]
    lines += (
        _table(["metric", "value"], [(k, f"{v:.4f}") for k, v in sorted(metrics.items())])
        if metrics
        else ["Not tested yet: `python evaluate.py ckpt_path=…`."]
    )
    calibration = results.get("calibration")
    if calibration:
        lines += [
            "",
            f"Calibration (validation): ECE {calibration['val_ece_before']:.3f} → "
            f"{calibration['val_ece_after']:.3f} at temperature {calibration['temperature']:.3f}.",
        ]
    return lines


def write_card(
    path: Path, checkpoint: dict[str, Any], name: str, audit_findings: Sequence[str] | None = None
) -> Path:
    """Write ``MODEL.md`` at ``path`` (a file, or a folder to put it in); returns the file."""
    path = Path(path)
    if path.is_dir():
        path = path / CARD_NAME
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_text(card_text(checkpoint, name, audit_findings), encoding="utf-8")
    tmp.replace(path)
    return path
