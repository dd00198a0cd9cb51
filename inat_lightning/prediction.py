"""The task behind ``predict.py``: identify new photos with a checkpoint — top-k species per
photo, one fused answer per observation, calibrated confidence with an ``uncertain`` flag, a
Grad-CAM explanation per photo, and optionally a deployable export of the model.

Reads as its steps: load the model and the run's preprocessing → collect the inputs → predict
in batches → fuse observations → explain → write ``predictions.csv``, ``observations.csv`` and
``predictions.json`` → export.

**Fusion rule**: an observation's class probabilities are the softmax of the mean of its
readable photos' log-probabilities (a product of experts: each photo is evidence, and one
confident photo outweighs several unsure ones).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig

from inat_lightning.analysis import tables
from inat_lightning.analysis.gradcam import (
    STYLES,
    cam_method,
    compute_cams,
    energy_in_box,
    resolve_layer,
)
from inat_lightning.analysis.infer import infer
from inat_lightning.analysis.results import (
    ObservationPrediction,
    PhotoPrediction,
    columns,
    write_json,
)
from inat_lightning.analysis.tiles import cam_tile
from inat_lightning.checks import require_checkpoint
from inat_lightning.config import ConfigError
from inat_lightning.data.dataset import ImageDataset
from inat_lightning.data.inputs import collect_inputs
from inat_lightning.data.manifest import Record
from inat_lightning.data.transforms import denormalize
from inat_lightning.models.card import write_card
from inat_lightning.models.checkpoint import checked_spec, load_classifier, read_checkpoint
from inat_lightning.models.classifier import Classifier
from inat_lightning.models.export import compare_export, export_model
from inat_lightning.models.spec import InputSpec

log = logging.getLogger(__name__)


def device_of(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU; a device this machine lacks is a
    ``ValueError``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not (
        torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()
    ):
        raise ValueError(f"no such GPU on this machine ({torch.cuda.device_count()} found)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError("must be auto, cpu or cuda[:N]")
    return device


def fuse(probs: np.ndarray, groups: list[str]) -> dict[str, np.ndarray]:
    """Observation → fused probabilities (see the module doc), over its readable photos."""
    members: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        if not np.isnan(probs[i]).any():
            members[g].append(i)
    out = {}
    for g, idx in members.items():
        mean_log = np.log(np.clip(probs[idx], 1e-12, 1)).mean(0)
        fused = np.exp(mean_log - mean_log.max())
        out[g] = fused / fused.sum()
    return out


def top_k(p: np.ndarray, names: list[str], k: int) -> list[tuple[str, float]]:
    """The ``k`` most probable classes, best first (ties by index): ``O(K)``, not a sort of
    every class (40,000 per photo at iNaturalist scale)."""
    idx = np.argpartition(-p, k - 1)[:k] if k < len(p) else np.arange(len(p))
    order = idx[np.lexsort((idx, -p[idx]))]
    return [(names[i], float(p[i])) for i in order]


def explain(
    cfg: DictConfig,
    model: Classifier,
    dataset: ImageDataset,
    records: list[Record],
    probs: np.ndarray,
    out: Path,
    spec: InputSpec,
) -> dict[int, dict[str, Any]]:
    """Per photo index: a captioned red Grad-CAM overlay of the top prediction (``explanation``,
    in ``explanations/``) for the first ``explain_max`` readable photos when ``explain``, and
    for *every* readable photo with a cue box in the manifest the CAM energy share in the box
    (``cue_share``: the warning that the model looks at the angler must not depend on how many
    photos get a picture)."""
    readable = [i for i in range(len(records)) if not np.isnan(probs[i]).any()]
    tiled = set(readable[: cfg.explain_max] if cfg.explain else [])
    boxed = {i for i in readable if records[i].cue_box is not None and records[i].width}
    chosen = sorted(tiled | boxed)
    if not chosen:
        return {}
    folder = out / "explanations"
    if tiled:
        folder.mkdir(exist_ok=True)
    names = model.class_names
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, len(chosen), 32):
        part = chosen[start : start + 32]
        x = torch.stack([dataset[i]["image"] for i in part])
        targets = [int(np.argmax(probs[i])) for i in part]
        cams = compute_cams(model.net, x, targets, cfg.cam_method, cfg.target_layer)
        photos = denormalize(x).permute(0, 2, 3, 1).numpy()
        for i, photo, cam, t in zip(part, photos, cams, targets):
            r = records[i]
            lines = [f"{names[t]}  {probs[i][t]:.0%}"]
            if r.taxon_name:
                lines.append(f"true: {r.taxon_name}")
            row: dict[str, Any] = {}
            box = None
            if i in boxed:
                box = spec.box(r.cue_box, r.width, r.height)
                row["cue_share"], _ = energy_in_box(cam, box)
                lines.append(f"CAM on the cue: {row['cue_share']:.0%}")
            if i in tiled:
                tile = cam_tile(photo, cam, lines, cfg.explain_style, box=box)
                name = f"{Path(r.photo_id).stem or i}_{i}.png"
                tile.save(folder / name)
                row["explanation"] = f"explanations/{name}"
            found[i] = row
    return found


def _number(cfg: DictConfig, name: str, kind: type, rule: Callable[[Any], bool], want: str):
    """``cfg[name]`` as ``kind`` obeying ``rule``, else a config error naming the key."""
    value = cfg.get(name)
    try:
        if isinstance(value, bool) or value is None:
            raise ValueError
        converted = kind(value)
        if kind is int and converted != float(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"{name}={value!r}: must be {want}") from None
    if not rule(converted):
        raise ConfigError(f"{name}={value!r}: must be {want}")
    return converted


def check_settings(cfg: DictConfig, model: Classifier) -> dict[str, Any]:
    """Every setting of ``predict.py`` checked before a photo is read: a bad one is one line
    naming its key. Returns them converted."""
    settings = {
        "top_k": _number(cfg, "top_k", int, lambda v: v >= 1, "an integer >= 1"),
        "uncertain_below": _number(
            cfg, "uncertain_below", float, lambda v: 0 <= v <= 1, "in [0, 1]"
        ),
        "explain_max": _number(cfg, "explain_max", int, lambda v: v >= 0, "an integer >= 0"),
        "cue_warning_share": _number(
            cfg, "cue_warning_share", float, lambda v: 0 < v <= 1, "in (0, 1]"
        ),
        "batch_size": _number(cfg, "batch_size", int, lambda v: v >= 1, "an integer >= 1"),
        "num_workers": _number(cfg, "num_workers", int, lambda v: v >= 0, "an integer >= 0"),
        "max_pixels": _number(cfg, "max_pixels", int, lambda v: v >= 1, "an integer >= 1"),
    }
    if cfg.explain_style not in STYLES:
        raise ConfigError(f"explain_style={cfg.explain_style!r}: must be one of {STYLES}")
    for name, check in (
        ("cam_method", lambda: cam_method(cfg.cam_method)),
        ("target_layer", lambda: resolve_layer(model.net, cfg.target_layer)),
        ("device", lambda: device_of(str(cfg.device))),
    ):
        try:
            check()
        except (ValueError, RuntimeError) as e:
            raise ConfigError(f"{name}={cfg[name]!r}: {e}") from None
    try:
        Path(cfg.paths.output_dir).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"paths.output_dir={cfg.paths.output_dir!r}: {e}") from None
    return settings


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict ``cfg.inputs`` with ``cfg.ckpt_path``; returns the summary of
    ``predictions.json``. The preprocessing is the checkpoint's own (its input spec): the
    checkpoint needs no run folder."""
    require_checkpoint(cfg)
    if not cfg.get("inputs"):
        raise ConfigError(
            "inputs: required: an image, a folder, a glob ('photos/*.jpg') or a manifest.csv"
        )
    ckpt = Path(cfg.ckpt_path)
    model = load_classifier(ckpt)
    spec = checked_spec(model, cfg.get("preprocess") or {})
    settings = check_settings(cfg, model)
    try:
        root, records, others = collect_inputs(str(cfg.inputs))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if others:
        log.info("%d files that are not images were left out", others)
    out = Path(cfg.paths.output_dir)
    names = model.class_names
    index = {n: i for i, n in enumerate(names)}
    dataset = ImageDataset(
        root,
        [r.path for r in records],
        [index.get(r.taxon_name, -1) for r in records],
        spec.transform(),
        settings["max_pixels"],
    )
    temperature = model.temperature if cfg.calibrated else 1.0
    predictions = infer(
        model.net,
        dataset,
        device_of(cfg.device),
        settings["batch_size"],
        settings["num_workers"],
        cfg.get("progress", True),
    )
    probs = predictions.probabilities(temperature)
    fused = fuse(probs, [r.observation_id for r in records])
    explained = explain(cfg, model, dataset, records, probs, out, spec)
    photo_rows, summary = _photo_rows(settings, records, probs, fused, explained, names)
    observation_rows = _observation_rows(settings, records, fused, names)
    tables.write_csv(out / "predictions.csv", photo_rows, columns(PhotoPrediction))
    tables.write_csv(out / "observations.csv", observation_rows, columns(ObservationPrediction))
    summary |= {
        "checkpoint": str(ckpt),
        "inputs": str(cfg.inputs),
        "input_spec": spec.to_dict(),
        "temperature": temperature,
        "non_images_left_out": others,
        "observations": len(observation_rows),
        "fusion": "softmax of the mean log-probability of the observation's photos",
    }
    summary["observation_accuracy"] = _accuracy(observation_rows)
    if cfg.export:
        summary["export"] = _export(model, dataset, probs, out, spec, ckpt)
    write_json(
        out / "predictions.json",
        {**summary, "photos": photo_rows, "observation_answers": observation_rows},
    )
    print(
        f"predict: {len(records)} photos ({summary['unreadable']} unreadable), "
        f"{len(observation_rows)} observations, {summary['uncertain']} uncertain "
        f"-> {out / 'predictions.csv'}"
    )
    return summary


def _top_text(best: list[tuple[str, float]]) -> str:
    return "; ".join(f"{n} {p:.4f}" for n, p in best)


def _photo_rows(
    settings, records, probs, fused, explained, names
) -> tuple[list[PhotoPrediction], dict]:
    rows, unreadable = [], []
    for i, r in enumerate(records):
        row = PhotoPrediction(r.photo_id, r.path, r.observation_id, true=r.taxon_name or None)
        rows.append(row)
        if np.isnan(probs[i]).any():
            unreadable.append(r.path)
            row.status = "unreadable"
            continue
        best = top_k(probs[i], names, settings["top_k"])
        row.prediction, row.probability = best[0][0], round(best[0][1], 6)
        row.uncertain = best[0][1] < settings["uncertain_below"]
        row.top_k = _top_text(best)
        row.observation_prediction = names[int(np.argmax(fused[r.observation_id]))]
        extra = explained.get(i, {})
        if "cue_share" in extra:
            row.cue_share = round(extra["cue_share"], 4)
            row.looks_at_cue = extra["cue_share"] >= settings["cue_warning_share"]
        row.explanation = extra.get("explanation")
    if unreadable:
        log.warning("%d unreadable images skipped: %s", len(unreadable), ", ".join(unreadable[:5]))
    summary = {
        "photos_read": len(records) - len(unreadable),
        "unreadable": len(unreadable),
        "unreadable_paths": unreadable,
        "uncertain": sum(bool(r.uncertain) for r in rows),
        "photo_accuracy": _accuracy(rows),
    }
    return rows, summary


def _observation_rows(settings, records, fused, names) -> list[ObservationPrediction]:
    truth = {r.observation_id: r.taxon_name for r in records}
    photos = defaultdict(int)
    for r in records:
        photos[r.observation_id] += 1
    rows = []
    for obs, p in fused.items():
        best = top_k(p, names, settings["top_k"])
        rows.append(
            ObservationPrediction(
                observation_id=obs,
                photos=photos[obs],
                prediction=best[0][0],
                probability=round(best[0][1], 6),
                uncertain=best[0][1] < settings["uncertain_below"],
                top_k=_top_text(best),
                true=truth[obs] or None,
            )
        )
    return rows


def _accuracy(rows: Sequence[PhotoPrediction | ObservationPrediction]) -> float | None:
    """Share of rows whose prediction is the true class (rows with a truth and a prediction)."""
    judged = [r for r in rows if r.true and r.prediction]
    return sum(r.true == r.prediction for r in judged) / len(judged) if judged else None


def _export(model, dataset, probs, out: Path, spec: InputSpec, ckpt: Path) -> dict[str, Any]:
    """Export beside the predictions (with the model card) and check it against the checkpoint
    on up to 16 photos."""
    program, meta = export_model(model, out / "export", spec)
    write_card(out / "export", read_checkpoint(ckpt), ckpt.name)
    readable = [i for i in range(len(dataset)) if not np.isnan(probs[i]).any()][:16]
    images = torch.stack([dataset[i]["image"] for i in readable])
    check = compare_export(program, model, images)
    log.info("exported %s (%s): %s", program, meta.name, check)
    if not check["ok"]:
        raise RuntimeError(f"the exported model disagrees with the checkpoint: {check}")
    return {"program": str(program), "meta": str(meta), "check": check}
