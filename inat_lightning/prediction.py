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

import csv
import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from inat_lightning.analysis.gradcam import compute_cams, energy_in_box
from inat_lightning.analysis.tiles import cam_tile
from inat_lightning.config import ConfigError
from inat_lightning.data.dataset import ImageDataset, collate_skipping
from inat_lightning.data.inputs import collect_inputs
from inat_lightning.data.manifest import Record
from inat_lightning.data.transforms import box_after_eval, denormalize, eval_transform
from inat_lightning.evaluation import restore_data_config
from inat_lightning.models.checkpoint import load_classifier
from inat_lightning.models.classifier import Classifier
from inat_lightning.models.export import compare_export, export_model
from inat_lightning.progress import progress

log = logging.getLogger(__name__)


def device_of(name: str) -> torch.device:
    """``auto``: the GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def predict_probabilities(
    model: Classifier,
    dataset: ImageDataset,
    batch_size: int,
    num_workers: int,
    temperature: float,
    device: torch.device,
    show_progress: bool = True,
) -> np.ndarray:
    """``(N, K)`` class probabilities, one row per dataset item; NaN rows for unreadable
    images (reported by the dataset, skipped)."""
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skipping
    )
    probs = np.full((len(dataset), len(model.class_names)), np.nan, dtype=np.float32)
    net = model.net.eval().to(device)
    bar = progress(loader, desc="predict", unit="batch", disable=not show_progress)
    with torch.inference_mode(), bar:
        for batch in bar:
            if batch["image"] is None:
                continue
            logits = net(batch["image"].to(device)).float()
            probs[batch["index"].numpy()] = torch.softmax(logits / temperature, 1).cpu().numpy()
    return probs


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
    order = np.argsort(-p, kind="stable")[:k]
    return [(names[i], float(p[i])) for i in order]


def explain(
    cfg: DictConfig,
    model: Classifier,
    dataset: ImageDataset,
    records: list[Record],
    probs: np.ndarray,
    out: Path,
    image_size: int,
    crop_ratio: float,
) -> dict[int, dict[str, Any]]:
    """A captioned red Grad-CAM overlay of the top prediction for the first ``explain_max``
    readable photos, in ``explanations/``; per photo index: the file and, for photos with a
    cue box in the manifest, the CAM energy share in the box."""
    readable = [i for i in range(len(records)) if not np.isnan(probs[i]).any()]
    chosen = readable[: cfg.explain_max]
    if not chosen:
        return {}
    folder = out / "explanations"
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
            if r.cue_box is not None and r.width and r.height:
                box = box_after_eval(r.cue_box, r.width, r.height, image_size, crop_ratio)
                row["cue_share"], _ = energy_in_box(cam, box)
                lines.append(f"CAM on the cue: {row['cue_share']:.0%}")
            tile = cam_tile(photo, cam, lines, cfg.explain_style, box=box)
            name = f"{Path(r.photo_id).stem or i}_{i}.png"
            tile.save(folder / name)
            row["explanation"] = f"explanations/{name}"
            found[i] = row
    return found


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]) if rows else ["photo_id"])
        writer.writeheader()
        writer.writerows(rows)


def predict(cfg: DictConfig) -> dict[str, Any]:
    """Predict ``cfg.inputs`` with ``cfg.ckpt_path``; returns the summary of
    ``predictions.json``."""
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path: required, e.g. ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt"
        )
    if not cfg.get("inputs"):
        raise ConfigError(
            "inputs: required: an image, a folder, a glob ('photos/*.jpg') or a manifest.csv"
        )
    for name, ok, rule in (
        ("top_k", cfg.top_k >= 1, ">= 1"),
        ("uncertain_below", 0 <= cfg.uncertain_below <= 1, "in [0, 1]"),
        ("explain_max", cfg.explain_max >= 0, ">= 0"),
        ("cue_warning_share", 0 < cfg.cue_warning_share <= 1, "in (0, 1]"),
    ):
        if not ok:
            raise ConfigError(f"{name}={cfg[name]}: must be {rule}")
    ckpt = Path(cfg.ckpt_path)
    model = load_classifier(ckpt)
    data = restore_data_config(cfg, ckpt)
    try:
        root, records, others = collect_inputs(str(cfg.inputs))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if others:
        log.info("%d files that are not images were left out", others)
    out = Path(cfg.paths.output_dir)
    names = model.class_names
    size, ratio = int(data.image_size), float(data.eval_crop_ratio)
    index = {n: i for i, n in enumerate(names)}
    dataset = ImageDataset(
        root,
        [r.path for r in records],
        [index.get(r.taxon_name, -1) for r in records],
        eval_transform(size, ratio),
        int(data.get("max_pixels", 40_000_000)),
    )
    temperature = model.temperature if cfg.calibrated else 1.0
    probs = predict_probabilities(
        model,
        dataset,
        int(data.batch_size),
        int(data.num_workers),
        temperature,
        device_of(cfg.device),
        cfg.get("progress", True),
    )
    fused = fuse(probs, [r.observation_id for r in records])
    explained = (
        explain(cfg, model, dataset, records, probs, out, size, ratio) if cfg.explain else {}
    )
    photo_rows, summary = _photo_rows(cfg, records, probs, fused, explained, names)
    observation_rows = _observation_rows(cfg, records, fused, names)
    write_csv(out / "predictions.csv", photo_rows)
    write_csv(out / "observations.csv", observation_rows)
    summary |= {
        "checkpoint": str(ckpt),
        "inputs": str(cfg.inputs),
        "temperature": temperature,
        "non_images_left_out": others,
        "observations": len(observation_rows),
        "fusion": "softmax of the mean log-probability of the observation's photos",
    }
    summary["observation_accuracy"] = _accuracy(observation_rows)
    if cfg.export:
        summary["export"] = _export(model, dataset, probs, out, size, ratio)
    (out / "predictions.json").write_text(
        json.dumps(
            {**summary, "photos": photo_rows, "observation_answers": observation_rows}, indent=2
        )
    )
    print(
        f"predict: {summary['photos_read']} photos ({summary['unreadable']} unreadable), "
        f"{len(observation_rows)} observations, {summary['uncertain']} uncertain "
        f"-> {out / 'predictions.csv'}"
    )
    return summary


def _photo_rows(cfg, records, probs, fused, explained, names) -> tuple[list[dict], dict]:
    rows, uncertain, unreadable = [], 0, []
    for i, r in enumerate(records):
        row: dict[str, Any] = {
            "photo_id": r.photo_id,
            "path": r.path,
            "observation_id": r.observation_id,
        }
        if np.isnan(probs[i]).any():
            unreadable.append(r.path)
            rows.append({**row, "status": "unreadable"})
            continue
        best = top_k(probs[i], names, cfg.top_k)
        row |= {"status": "ok", "prediction": best[0][0], "probability": round(best[0][1], 6)}
        row["uncertain"] = best[0][1] < cfg.uncertain_below
        uncertain += row["uncertain"]
        row["top_k"] = "; ".join(f"{n} {p:.4f}" for n, p in best)
        row["observation_prediction"] = names[int(np.argmax(fused[r.observation_id]))]
        if r.taxon_name:
            row["true"] = r.taxon_name
        extra = explained.get(i, {})
        if "cue_share" in extra:
            row["cue_share"] = round(extra["cue_share"], 4)
            row["looks_at_cue"] = extra["cue_share"] >= cfg.cue_warning_share
        if "explanation" in extra:
            row["explanation"] = extra["explanation"]
        rows.append(row)
    if unreadable:
        log.warning("%d unreadable images skipped: %s", len(unreadable), ", ".join(unreadable[:5]))
    summary = {
        "photos_read": len(records) - len(unreadable),
        "unreadable": len(unreadable),
        "unreadable_paths": unreadable,
        "uncertain": uncertain,
        "photo_accuracy": _accuracy(rows),
    }
    return rows, summary


def _observation_rows(cfg, records, fused, names) -> list[dict]:
    truth = {r.observation_id: r.taxon_name for r in records}
    photos = defaultdict(int)
    for r in records:
        photos[r.observation_id] += 1
    rows = []
    for obs, p in fused.items():
        best = top_k(p, names, cfg.top_k)
        row = {
            "observation_id": obs,
            "photos": photos[obs],
            "prediction": best[0][0],
            "probability": round(best[0][1], 6),
            "uncertain": best[0][1] < cfg.uncertain_below,
            "top_k": "; ".join(f"{n} {q:.4f}" for n, q in best),
        }
        if truth[obs]:
            row["true"] = truth[obs]
        rows.append(row)
    return rows


def _accuracy(rows: list[dict]) -> float | None:
    """Share of rows whose prediction is the true class (rows with a truth and a prediction)."""
    judged = [r for r in rows if r.get("true") and r.get("prediction")]
    return sum(r["true"] == r["prediction"] for r in judged) / len(judged) if judged else None


def _export(model, dataset, probs, out: Path, size: int, ratio: float) -> dict[str, Any]:
    """Export beside the predictions and check it against the checkpoint on up to 16 photos."""
    program, meta = export_model(model, out / "export", size, ratio)
    readable = [i for i in range(len(dataset)) if not np.isnan(probs[i]).any()][:16]
    images = torch.stack([dataset[i]["image"] for i in readable])
    check = compare_export(program, model, images)
    log.info("exported %s (%s): %s", program, meta.name, check)
    if not check["ok"]:
        raise RuntimeError(f"the exported model disagrees with the checkpoint: {check}")
    return {"program": str(program), "meta": str(meta), "check": check}
