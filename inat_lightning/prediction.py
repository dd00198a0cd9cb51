"""The task behind ``predict.py``: identify new photos with a checkpoint — top-k species per
photo, one fused answer per observation, calibrated confidence with an ``uncertain`` flag, an
answer at the finest rank that is sure enough (species, else genus, else family), a Grad-CAM
explanation per photo, and optionally a deployable export of the model.

Reads as its steps: load the model and the run's preprocessing → collect the inputs → predict
in batches streamed in observation order, each photo reduced to its top-k and each observation
fused as it completes (memory does not grow with photos × classes) → explain → write
``predictions.csv``, ``observations.csv`` and ``predictions.json`` → export.

**Fusion rule**: an observation's class probabilities are the softmax of the mean of its
readable photos' log-probabilities (a product of experts: each photo is evidence, and one
confident photo outweighs several unsure ones).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from torch.utils.data import Subset

from inat_lightning.analysis import tables
from inat_lightning.analysis.coverage import Answer, RankAnswer
from inat_lightning.analysis.gradcam import (
    STYLES,
    CamSetting,
    compute_cams,
    energy_in_box,
    resolve_layer,
)
from inat_lightning.analysis.infer import Batch, batches
from inat_lightning.analysis.results import (
    ObservationPrediction,
    PhotoPrediction,
    columns,
    write_json,
)
from inat_lightning.analysis.tiles import cam_tile
from inat_lightning.checks import non_negative, require_checkpoint, setting
from inat_lightning.config import ConfigError, build
from inat_lightning.data.dataset import ImageDataset
from inat_lightning.data.geo import Place, PlacesCsv, exif_place, read_places
from inat_lightning.data.inputs import collect_inputs
from inat_lightning.data.manifest import Record
from inat_lightning.data.spec import InputSpec
from inat_lightning.data.transforms import denormalize
from inat_lightning.models.card import write_card
from inat_lightning.models.checkpoint import checked_spec, load_classifier, read_checkpoint
from inat_lightning.models.classifier import Classifier
from inat_lightning.models.export import compare_export, export_model
from inat_lightning.models.open_set import OpenSetRule

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
    fusers: dict[str, Fused] = {}
    for p, g in zip(probs, groups):
        if not np.isnan(p).any():
            fusers.setdefault(g, Fused(len(p))).add(p)
    return {g: f.probabilities() for g, f in fusers.items()}


class Fused:
    """One observation's fused probabilities, a photo at a time: a running sum of
    log-probabilities, ``O(K)`` however many photos it has."""

    def __init__(self, num_classes: int) -> None:
        self.log_sum = np.zeros(num_classes, dtype=np.float64)
        self.photos = 0

    def add(self, p: np.ndarray) -> None:
        self.log_sum += np.log(np.clip(p, 1e-12, 1))
        self.photos += 1

    def probabilities(self) -> np.ndarray:
        mean_log = self.log_sum / self.photos
        fused = np.exp(mean_log - mean_log.max())
        return fused / fused.sum()


Ranked = list[tuple[str, float]]


@dataclass
class Answers:
    """What the predictions are kept as: the ``k`` best classes of each photo (``None``:
    unreadable) and of each observation. ``O((photos + observations) × k)``: no
    photos × classes array at any class count."""

    photos: list[Ranked | None]
    observations: dict[str, Ranked]
    photo_answers: list[Answer | None] = field(default_factory=list)
    observation_answers: dict[str, Answer] = field(default_factory=dict)
    out_of_set: list[bool | None] = field(default_factory=list)  # the checkpoint's open-set rule

    def readable(self) -> list[int]:
        return [i for i, best in enumerate(self.photos) if best is not None]


def observation_order(groups: Sequence[str]) -> list[int]:
    """The photo indices with each observation's photos together (in order of first
    appearance), so that an observation is complete once the stream has passed it."""
    first: dict[str, int] = {}
    return sorted(range(len(groups)), key=lambda i: first.setdefault(groups[i], i))


def answer(
    stream: Iterable[Batch],
    groups: Sequence[str],
    names: list[str],
    temperature: float,
    k: int,
    coarse: RankAnswer | None = None,
    prior_terms: Callable[[np.ndarray], np.ndarray] | None = None,
    rule: OpenSetRule | None = None,
) -> Answers:
    """Reduce a stream of batches in :func:`observation_order` to :class:`Answers`: each
    photo's top ``k``, each observation fused (see the module doc) and ranked as soon as its
    last readable photo has passed, so one batch and one open observation are in memory.
    ``coarse`` adds each one's answer at the finest sure rank (:class:`RankAnswer`);
    ``prior_terms`` (photo indices → the place prior's ``(B, K)`` log-ratio terms) is added to
    each photo's log-probabilities; ``rule`` flags photos of no trained species."""
    n = len(groups)
    answers = Answers([None] * n, {}, [None] * n, {}, [None] * n)

    def close(group: str, fused: Fused) -> None:
        p = fused.probabilities()
        answers.observations[group] = top_k(p, names, k)
        if coarse is not None:
            answers.observation_answers[group] = coarse(p)

    open_group: str | None = None
    fused: Fused | None = None
    for batch in stream:
        log_p = torch.log_softmax(torch.from_numpy(batch.logits) / temperature, 1).numpy()
        if prior_terms is not None:
            log_p = log_p + prior_terms(batch.index)
        probs = torch.softmax(torch.from_numpy(log_p), 1).numpy()
        flags = rule.flags(batch.logits, temperature) if rule is not None else [None] * len(probs)
        for i, p, flag in zip(batch.index.tolist(), probs, flags):
            if not np.isfinite(p).all():
                continue
            answers.photos[i] = top_k(p, names, k)
            answers.out_of_set[i] = None if flag is None else bool(flag)
            if coarse is not None:
                answers.photo_answers[i] = coarse(p)
            if groups[i] != open_group:
                if fused is not None:
                    close(open_group, fused)
                open_group, fused = groups[i], Fused(len(p))
            fused.add(p)
    if fused is not None:
        close(open_group, fused)
    return answers


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
    answers: Answers,
    out: Path,
    spec: InputSpec,
    cam: CamSetting,
) -> dict[int, dict[str, Any]]:
    """Per photo index: a captioned red Grad-CAM overlay of the top prediction (``explanation``,
    in ``explanations/``) for the first ``explain_max`` readable photos when ``explain``, and
    for *every* readable photo with a cue box in the manifest the CAM energy share in the box
    (``cue_share``: the warning that the model looks at the angler must not depend on how many
    photos get a picture)."""
    readable = answers.readable()
    tiled = set(readable[: cfg.explain_max] if cfg.explain else [])
    boxed = {i for i in readable if records[i].cue_box is not None and records[i].width}
    chosen = sorted(tiled | boxed)
    if not chosen:
        return {}
    folder = out / "explanations"
    if tiled:
        folder.mkdir(exist_ok=True)
    names = model.class_names
    position = {n: i for i, n in enumerate(names)}
    found: dict[int, dict[str, Any]] = {}
    for start in range(0, len(chosen), 32):
        part = chosen[start : start + 32]
        x = torch.stack([dataset[i]["image"] for i in part])
        best = [answers.photos[i][0] for i in part]
        targets = [position[n] for n, _ in best]
        cams = compute_cams(model.net, x, targets, cam)
        photos = denormalize(x).permute(0, 2, 3, 1).numpy()
        for i, photo, heat, (name, p) in zip(part, photos, cams, best):
            r = records[i]
            lines = [f"{name}  {p:.0%}"]
            if r.taxon_name:
                lines.append(f"true: {r.taxon_name}")
            row: dict[str, Any] = {}
            box = None
            if i in boxed:
                box = spec.box(r.cue_box, r.width, r.height)
                row["cue_share"], _ = energy_in_box(heat, box)
                lines.append(f"CAM on the cue: {row['cue_share']:.0%}")
            if i in tiled:
                tile = cam_tile(photo, heat, lines, cfg.explain_style, box=box)
                name = f"{Path(r.photo_id).stem or i}_{i}.png"
                tile.save(folder / name)
                row["explanation"] = f"explanations/{name}"
            found[i] = row
    return found


def check_settings(cfg: DictConfig, model: Classifier) -> dict[str, Any]:
    """Every setting of ``predict.py`` checked before a photo is read: a bad one is one line
    naming its key. Returns them converted."""
    settings = {
        "top_k": setting(cfg, "top_k", int, lambda v: v >= 1, "an integer >= 1"),
        "uncertain_below": setting(
            cfg, "uncertain_below", float, lambda v: 0 <= v <= 1, "in [0, 1]"
        ),
        "explain_max": setting(cfg, "explain_max", int, lambda v: v >= 0, "an integer >= 0"),
        "cue_warning_share": setting(
            cfg, "cue_warning_share", float, lambda v: 0 < v <= 1, "in (0, 1]"
        ),
        "batch_size": setting(cfg, "batch_size", int, lambda v: v >= 1, "an integer >= 1"),
        "num_workers": setting(cfg, "num_workers", int, lambda v: v >= 0, "an integer >= 0"),
        "max_pixels": setting(cfg, "max_pixels", int, lambda v: v >= 1, "an integer >= 1"),
        "prior_weight": setting(cfg, "prior_weight", float, non_negative, "a number >= 0"),
    }
    if cfg.get("places"):
        try:
            settings["places"] = read_places(cfg.places)
        except (OSError, ValueError) as e:
            raise places_error(cfg, e) from None
    if cfg.explain_style not in STYLES:
        raise ConfigError(f"explain_style={cfg.explain_style!r}: must be one of {STYLES}")
    settings["cam"] = build(cfg.cam, "cam")
    try:
        resolve_layer(model.net, settings["cam"].target_layer)
    except ValueError as e:
        raise ConfigError(f"cam.{e}") from None
    try:
        device_of(str(cfg.device))
    except (ValueError, RuntimeError) as e:
        raise ConfigError(f"device={cfg.device!r}: {e}") from None
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
    require_inputs(cfg)
    ckpt = Path(cfg.ckpt_path)
    model = load_classifier(ckpt)
    spec = checked_spec(model, cfg.get("preprocess") or {})
    settings = check_settings(cfg, model)
    root, records, others = input_photos(cfg)
    given = csv_places(cfg, settings.get("places"), root, records)
    out = Path(cfg.paths.output_dir)
    dataset = photo_dataset(root, records, model.class_names, spec, settings["max_pixels"])
    temperature = model.temperature if cfg.calibrated else 1.0
    groups = [r.observation_id for r in records]
    stream = batches(
        model.net,
        Subset(dataset, observation_order(groups)),
        device_of(cfg.device),
        settings["batch_size"],
        settings["num_workers"],
        cfg.get("progress", True),
    )
    names = model.class_names
    coarse = RankAnswer(names, model.hparams.get("lineages"), settings["uncertain_below"])
    terms, sources = place_terms(cfg, model, settings, root, records, given)
    answers = answer(
        stream, groups, names, temperature, settings["top_k"], coarse, terms, model.open_set
    )
    explained = explain(cfg, model, dataset, records, answers, out, spec, settings["cam"])
    photo_rows, summary = _photo_rows(settings, records, answers, explained)
    observation_rows = _observation_rows(settings, records, answers)
    tables.write_csv(out / "predictions.csv", photo_rows, columns(PhotoPrediction))
    tables.write_csv(out / "observations.csv", observation_rows, columns(ObservationPrediction))
    used = {"used": terms is not None, "weight": settings["prior_weight"]}
    summary |= {
        "checkpoint": str(ckpt),
        "inputs": str(cfg.inputs),
        "input_spec": spec.to_dict(),
        "temperature": temperature,
        "non_images_left_out": others,
        "observations": len(observation_rows),
        "fusion": "softmax of the mean log-probability of the observation's photos",
        "place_prior": used | {"photos_with_place_or_date": dict(Counter(filter(None, sources)))},
        "not_in_classes": sum(bool(f) for f in answers.out_of_set),
        "observation_accuracy": _accuracy(observation_rows),
    }
    if cfg.export:
        summary["export"] = _export(model, dataset, answers, out, spec, ckpt)
    rows = {"photos": photo_rows, "observation_answers": observation_rows}
    write_json(out / "predictions.json", summary | rows)
    print(
        f"predict: {len(records)} photos ({summary['unreadable']} unreadable), "
        f"{len(observation_rows)} observations, {summary['uncertain']} uncertain "
        f"-> {out / 'predictions.csv'}"
    )
    return summary


def require_inputs(cfg: DictConfig) -> None:
    if not cfg.get("inputs"):
        raise ConfigError(
            "inputs: required: an image, a folder, a glob ('photos/*.jpg') or a manifest.csv"
        )


def photo_dataset(
    root: Path, records: list[Record], names: list[str], spec: Any, max_pixels: int
) -> ImageDataset:
    """The photos as the checkpoint's input spec makes them; a photo labelled with a class the
    model does not know gets label -1."""
    index = {n: i for i, n in enumerate(names)}
    labels = [index.get(r.taxon_name, -1) for r in records]
    return ImageDataset(root, [r.path for r in records], labels, spec.transform(), max_pixels)


def input_photos(cfg: DictConfig) -> tuple[Path, list[Record], int]:
    """``cfg.inputs`` as ``(root, records, files that are not images)``; a path that names no
    photo is a config error."""
    try:
        root, records, others = collect_inputs(str(cfg.inputs))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    if others:
        log.info("%d files that are not images were left out", others)
    return root, records, others


def place_terms(
    cfg: DictConfig,
    model: Any,
    settings: dict[str, Any],
    root: Path,
    records: list[Record],
    given: Any,
) -> tuple[Callable[[np.ndarray], np.ndarray] | None, list[str]]:
    """The place prior's log-ratio terms for photos by index (``None`` without a prior or at
    weight 0: then no photo's place is read) and where each photo's place came from."""
    if model.prior is not None and settings["prior_weight"] > 0:
        places, sources = photo_places(root, records, given, cfg.exif)
        prior, weight = model.prior, settings["prior_weight"]

        def terms(index: np.ndarray) -> np.ndarray:
            return prior.log_ratio([places[i] for i in index], weight)

        return terms, sources
    if given is not None:
        why = "prior_weight=0" if model.prior is not None else "the checkpoint has no place prior"
        log.warning("places=%r: not used (%s)", cfg.places, why)
    return None, []


def places_error(cfg: DictConfig, e: Exception) -> ConfigError:
    """A ``places`` CSV that cannot be used: one line naming the key, the file and the row."""
    return ConfigError(f"places={cfg.places!r}: {e}")


def csv_places(
    cfg: DictConfig, table: PlacesCsv | None, root: Path, records: list[Record]
) -> list[Place | None] | None:
    """Each photo's place from the ``places`` CSV (``None``: no CSV; an item ``None``: no row
    names the photo), the rows that match no photo named in the log; two rows naming one photo
    with different places are a config error naming both."""
    if table is None:
        return None
    try:
        return table.match(root, records)
    except ValueError as e:
        raise places_error(cfg, e) from None


def photo_places(
    root: Path, records: list[Record], given: Sequence[Place | None] | None, exif: bool
) -> tuple[list[Place], list[str | None]]:
    """Each photo's place and season and where it came from: the user's ``places`` CSV
    (``given``, a place or ``None`` per record: :func:`csv_places`), else the manifest, else
    the photo's EXIF GPS and date (``exif``); ``None`` where none says anything."""
    places, sources = [], []
    for i, r in enumerate(records):
        found, source = Place(), None
        listed = Place.of(r)
        if given is not None and given[i] is not None:
            found, source = given[i], "csv"
        elif listed.known:
            found, source = listed, "manifest"
        elif exif:
            found = exif_place(root / r.path)
            source = "exif" if found.known else None
        places.append(found)
        sources.append(source if found.known else None)
    return places, sources


def _top_text(best: list[tuple[str, float]]) -> str:
    return "; ".join(f"{n} {p:.4f}" for n, p in best)


def _photo_rows(
    settings: dict[str, Any],
    records: list[Record],
    answers: Answers,
    explained: dict[int, dict[str, Any]],
) -> tuple[list[PhotoPrediction], dict]:
    rows, unreadable = [], []
    for i, (r, best) in enumerate(zip(records, answers.photos)):
        row = PhotoPrediction(r.photo_id, r.path, r.observation_id, true=r.taxon_name or None)
        rows.append(row)
        if best is None:
            unreadable.append(r.path)
            row.status = "unreadable"
            continue
        row.prediction, row.probability = best[0][0], round(best[0][1], 6)
        row.uncertain = best[0][1] < settings["uncertain_below"]
        row.top_k = _top_text(best)
        row.answer_rank, row.answer, row.answer_probability = _rounded(answers.photo_answers[i])
        row.observation_prediction = answers.observations[r.observation_id][0][0]
        row.not_in_classes = answers.out_of_set[i]
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


def _observation_rows(
    settings: dict[str, Any], records: list[Record], answers: Answers
) -> list[ObservationPrediction]:
    truth = {r.observation_id: r.taxon_name for r in records}
    photos: dict[str, int] = defaultdict(int)
    for r in records:
        photos[r.observation_id] += 1
    flags: dict[str, list[bool]] = defaultdict(list)
    for r, flag in zip(records, answers.out_of_set):
        if flag is not None:
            flags[r.observation_id].append(flag)
    rows = []
    for obs, best in answers.observations.items():
        rank, name, p = _rounded(answers.observation_answers.get(obs))
        rows.append(
            ObservationPrediction(
                observation_id=obs,
                photos=photos[obs],
                prediction=best[0][0],
                probability=round(best[0][1], 6),
                uncertain=best[0][1] < settings["uncertain_below"],
                top_k=_top_text(best),
                true=truth[obs] or None,
                answer_rank=rank,
                answer=name,
                answer_probability=p,
                not_in_classes=all(flags[obs]) if flags.get(obs) else None,
            )
        )
    return rows


def _rounded(found: Answer | None) -> tuple[str | None, str | None, float | None]:
    return (found[0], found[1], round(found[2], 6)) if found else (None, None, None)


def _accuracy(rows: Sequence[PhotoPrediction | ObservationPrediction]) -> float | None:
    """Share of rows whose prediction is the true class (rows with a truth and a prediction)."""
    judged = [r for r in rows if r.true and r.prediction]
    return sum(r.true == r.prediction for r in judged) / len(judged) if judged else None


def _export(
    model: Classifier,
    dataset: ImageDataset,
    answers: Answers,
    out: Path,
    spec: InputSpec,
    ckpt: Path,
) -> dict[str, Any]:
    """Export beside the predictions (with the model card) and check it against the checkpoint
    on up to 16 photos."""
    program, meta = export_model(model, out / "export", spec)
    write_card(out / "export", read_checkpoint(ckpt), ckpt.name)
    readable = answers.readable()[:16]
    images = torch.stack([dataset[i]["image"] for i in readable])
    check = compare_export(program, model, images)
    log.info("exported %s (%s): %s", program, meta.name, check)
    if not check["ok"]:
        raise RuntimeError(f"the exported model disagrees with the checkpoint: {check}")
    return {"program": str(program), "meta": str(meta), "check": check}
