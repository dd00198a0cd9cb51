"""The analysis task behind ``evaluate.py``: test a checkpoint on its run's test split and write
metrics, per-class and look-alike tables, figures, Grad-CAM galleries, the bias audit and one
``report.md`` gathering them — to the run dir and to TensorBoard.

:func:`evaluate` reads as its steps: load → test → tables → audit → galleries → summary and
report → TensorBoard."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from PIL import Image

from inat_lightning import run_files
from inat_lightning.analysis import tables
from inat_lightning.analysis.audit import choose_audit
from inat_lightning.analysis.coverage import (
    THRESHOLDS,
    RankAnswer,
    at_threshold,
    risk_coverage,
)
from inat_lightning.analysis.data_bias import dataset_report
from inat_lightning.analysis.discover import discover_split
from inat_lightning.analysis.figures import (
    reliability_figure,
    risk_coverage_figure,
    save,
    score_histogram,
)
from inat_lightning.analysis.infer import Predictions, batches
from inat_lightning.analysis.open_set import open_set_report
from inat_lightning.analysis.place_gain import place_gain
from inat_lightning.analysis.report import audit_findings, write_report
from inat_lightning.analysis.results import EvaluationSummary, to_record, write_json
from inat_lightning.analysis.tiles import side_by_side
from inat_lightning.callbacks.outputs import CollectTestLogits
from inat_lightning.callbacks.saved import SavesFiles
from inat_lightning.callbacks.writers import tensorboard_writers
from inat_lightning.checks import non_negative, require_checkpoint, setting
from inat_lightning.config import ConfigError, build, build_all, check_targets
from inat_lightning.data.geo import Place
from inat_lightning.data.protocol import ClassifierData, check_data_module
from inat_lightning.data.spec import InputSpec
from inat_lightning.models.calibration import reliability, scores, softmax
from inat_lightning.models.card import write_card
from inat_lightning.models.checkpoint import checked_spec, load_classifier, read_checkpoint
from inat_lightning.models.classifier import Classifier
from inat_lightning.models.confusion import Confusion
from inat_lightning.models.metric_names import TAXONOMY_SCALARS, key
from inat_lightning.models.metrics import scalar_metrics
from inat_lightning.models.open_set import open_set_score
from inat_lightning.models.spec import pin_input_spec
from inat_lightning.runs.overrides import command_data_changes

log = logging.getLogger(__name__)


def restore_data_config(cfg: DictConfig, ckpt: Path) -> DictConfig:
    """The training run's data config, with its ``splits.csv`` pinned, so the test split is the
    same one; then this command's ``data.*`` overrides (and ``data_overrides``) on top. Falls
    back to ``cfg.data`` when the checkpoint is not inside a run folder or
    ``restore_data=false``: the run folder is read only for what only it has (the data and its
    split), never for how inputs are made (the checkpoint says that)."""
    run_dir = ckpt.resolve().parent.parent
    saved, splits = run_dir / run_files.SAVED_CONFIG, run_dir / run_files.SPLITS
    if not cfg.get("restore_data", True) or not saved.is_file():
        log.info("using data from this command's config")
        return cfg.data.copy()
    data = _saved_data(saved)
    _check_restorable(data, saved, _targets(OmegaConf.to_container(cfg.data, resolve=False)))
    changed = command_data_changes(cfg)
    with open_dict(data):
        if splits.is_file() and "split" in data:  # shards hold their split themselves
            data.split.file = str(splits)
        _write_only_here(data, cfg)
        for name, value in changed.items():
            OmegaConf.update(data, name, value, merge=False)
    log.info("restored data config and split of %s (changed: %s)", run_dir, changed or "nothing")
    return data


def _write_only_here(data: DictConfig, cfg: DictConfig) -> None:
    """A run folder may say what data to read, not where this command writes: its split goes to
    this run's folder, photo hashes and fetched shards to this command's caches, and the
    embedded data set, when the run's folder for it is not on this machine, is made under this
    command's ``paths.data_dir`` (it is the same data wherever it is drawn)."""
    data.splits_out = str(Path(cfg.paths.output_dir) / run_files.SPLITS)
    if "hash_cache" in data:
        data.hash_cache = OmegaConf.select(cfg, "data.hash_cache", default=None)
    if "cache_dir" in data:  # data=shards: a remote set's shards, fetched here
        default = str(Path(cfg.paths.data_dir) / "shard-cache")
        data.cache_dir = OmegaConf.select(cfg, "data.cache_dir", default=default)
    root = OmegaConf.select(data, "root", default=None)
    if data.get("synthetic") is not None and root and not Path(str(root)).is_dir():
        data.root = str(Path(cfg.paths.data_dir) / Path(str(root)).name)
        log.info(
            "the run's data folder %s is not here: the embedded data set is in %s", root, data.root
        )


def data_config(cfg: DictConfig, ckpt: Path, spec: InputSpec) -> DictConfig:
    """The data config to evaluate on, its preprocessing the checkpoint's ``spec`` (see
    :func:`~inat_lightning.models.spec.pin_input_spec`)."""
    data = restore_data_config(cfg, ckpt)
    try:
        with open_dict(data):
            pin_input_spec(data, spec, command_data_changes(cfg))
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return data


def _saved_data(saved: Path) -> DictConfig:
    """The ``data`` node of a run folder's saved config (a file that may come from anyone): a
    file that is not YAML, or holds no ``data`` mapping, is a config error naming it."""
    try:
        found = OmegaConf.load(saved)
    except Exception as e:  # noqa: BLE001 - yaml and OmegaConf raise many kinds
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"ckpt_path: the run's {saved} is not readable YAML: {first}") from None
    data = found.get("data") if isinstance(found, DictConfig) else None
    if not isinstance(data, DictConfig):
        raise ConfigError(
            f"ckpt_path: the run's {saved} has no data mapping (restore_data=false uses this "
            "command's data)"
        )
    return data


#: what a run folder's saved config may build, besides what this command's own data config
#: builds (a user's own data module): a shared run folder must not choose which code runs
RESTORABLE_TARGETS = {
    "inat_lightning.data.datamodule.ImageFolderDataModule",
    "inat_lightning.data.shard_datamodule.ShardDataModule",
    "inat_lightning.data.split.SplitSpec",
    "inat_lightning.data.synthetic.SyntheticSpecies",
}


def _targets(node: Any) -> set[str]:
    """Every ``_target_`` value in a nested container."""
    if isinstance(node, dict):
        own = {str(node["_target_"])} if "_target_" in node else set()
        return own.union(*(_targets(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_targets(v) for v in node))
    return set()


def _check_restorable(data: DictConfig, saved: Path, own: set[str]) -> None:
    """Refuse a saved data config that would build anything but this project's data classes
    and those this command's own data config (``own``) builds."""
    built = _targets(OmegaConf.to_container(data, resolve=False))
    foreign = sorted(built - RESTORABLE_TARGETS - own)
    if foreign:
        raise ConfigError(
            f"ckpt_path: the run's {saved} would build {', '.join(foreign)}; only this project's "
            "data classes and this command's data._target_ are built from a run folder "
            "(restore_data=false uses this command's data)"
        )


def load_data(cfg: DictConfig, ckpt: Path, model: Classifier, spec: InputSpec) -> ClassifierData:
    """The data module, test split set up; its classes must be the checkpoint's. The data
    config used is saved as ``data.yaml`` in the run folder."""
    data = data_config(cfg, ckpt, spec)
    OmegaConf.save(data, Path(cfg.paths.output_dir) / "data.yaml")
    datamodule = build(data, "data")  # a bad value: a config error naming its key
    try:
        check_data_module(datamodule)
        datamodule.setup("test")
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"data: {e}") from e
    if model.class_names != datamodule.class_names:
        raise ConfigError(
            f"data: classes {datamodule.class_names} differ from the checkpoint's "
            f"{model.class_names}"
        )
    return datamodule


def run_test(
    trainer: L.Trainer, model: Classifier, datamodule: ClassifierData
) -> tuple[dict[str, float], Confusion]:
    """Test metrics and the test confusion counts (the callbacks draw figures and galleries)."""
    trainer.test(model, datamodule=datamodule, weights_only=True)
    return scalar_metrics(trainer.callback_metrics), model.confusion("test")


def write_tables(
    out: Path,
    confusion: Confusion,
    model: Classifier,
    datamodule: ClassifierData,
    top_pairs: int,
) -> dict[str, list]:
    """``per_class.csv`` (weakest, rarest species first, with their training images) and
    ``confused_pairs.csv`` (with the pair's lowest common rank when there is a taxonomy);
    returns both tables."""
    names, counts = model.class_names, datamodule.class_counts.int().tolist()
    found = {
        "per_class": tables.weakest_first(tables.per_class_table(confusion, names, counts)),
        "confused_pairs": tables.most_confused_pairs(confusion, names, top_pairs, model.taxonomy),
    }
    for name, rows in found.items():
        tables.write_csv(out / f"{name}.csv", rows)
    return found


def write_test_predictions(
    out: Path,
    names: list[str],
    records: list[Any],
    labels: np.ndarray,
    log_vision: np.ndarray,
    log_final: np.ndarray,
) -> Path:
    """``test_predictions.csv``: each readable test photo's true class, top-1 answer and
    calibrated probability as ``predict.py`` gives them (fused with the place prior when the
    checkpoint has one), and then the vision model's own answer."""
    fused = log_final is not log_vision
    rows = []
    for r, y, v, f in zip(records, labels.tolist(), log_vision, log_final):
        row = {
            "photo_id": r.photo_id,
            "path": r.path,
            "true": names[int(y)],
            "prediction": names[int(f.argmax())],
            "probability": round(float(np.exp(f.max())), 6),
        }
        if fused:
            row |= {
                "vision_prediction": names[int(v.argmax())],
                "vision_probability": round(float(np.exp(v.max())), 6),
            }
        rows.append(row)
    tables.write_csv(out / "test_predictions.csv", rows)
    return out / "test_predictions.csv"


def final_answers(
    weight: float,
    model: Classifier,
    datamodule: ClassifierData,
    collected: Any,
    out: Path,
) -> tuple[dict[str, Any] | None, np.ndarray, np.ndarray]:
    """The test photos' calibrated log-probabilities, fused with the place prior when the
    checkpoint has one (``prior_weight`` > 0), written to ``test_predictions.csv``; returns the
    prior's gain (``None`` without a prior), the final log-probabilities and the labels."""
    logits, labels = collected.result()
    labels = labels.numpy()
    records = [datamodule.records["test"][i] for i in collected.indices().tolist()]
    log_vision = torch.log_softmax(logits.float() / model.temperature, 1).numpy()
    gain, log_final = None, log_vision
    if model.prior is not None and weight > 0 and len(labels):
        places = [Place.of(r) for r in records]
        gain, log_final = place_gain(
            log_vision, labels, places, model.prior, weight, model.class_names
        )
    write_test_predictions(out, model.class_names, records, labels, log_vision, log_final)
    return gain, log_final, labels


def coverage(
    model: Classifier, log_final: np.ndarray, labels: np.ndarray, threshold: float, out: Path
) -> dict[str, Any] | None:
    """Risk–coverage of species-only and fallback answers on the test split (the answers
    ``predict.py`` gives, at its ``uncertain_below``), drawn in ``risk_coverage.png``."""
    if not len(labels):
        return None
    coarse = RankAnswer(model.class_names, model.hparams.get("lineages"), threshold)
    grid = sorted({*THRESHOLDS, threshold})
    curves = risk_coverage(np.exp(log_final), labels, coarse, grid)
    save(risk_coverage_figure(curves, threshold), out / "risk_coverage.png")
    return {
        "threshold": threshold,
        "at_threshold": at_threshold(curves, threshold),
        "curves": curves,
        "figure": "risk_coverage.png",
    }


def open_set(
    model: Classifier, datamodule: ClassifierData, collected: Any, device: Any, out: Path
) -> dict[str, Any] | None:
    """Out-of-set detection: the test photos against the held-out species' photos
    (``data.held_out_classes``), with ``open_set_scores.png`` when there are both."""
    known = collected.result()[0].numpy()
    unknown = None
    held = datamodule.datasets.get("held_out")
    if held is not None:
        found = Predictions.gather(
            batches(model.net, held, device, datamodule.batch_size, datamodule.num_workers),
            len(held),
        )
        unknown = found.logits[found.readable]
    report = open_set_report(known, unknown, model.temperature, model.open_set)
    if report and model.open_set is not None and unknown is not None and len(unknown):
        rule, t = model.open_set, model.temperature
        scores = {
            "test (known species)": open_set_score(known, t, rule.score),
            "held-out species": open_set_score(unknown, t, rule.score),
        }
        save(score_histogram(scores, rule.threshold, rule.score), out / "open_set_scores.png")
        report["figure"] = "open_set_scores.png"
    return report


def taxonomy_summary(model: Classifier, metrics: dict[str, float]) -> dict[str, Any] | None:
    """The rank-level test metrics and how many classes have a lineage; ``None`` without a
    taxonomy."""
    if model.taxonomy is None:
        return None
    known = sum(1 for lin in model.taxonomy.lineages if lin)
    found = {m: metrics[key("test", m)] for m in TAXONOMY_SCALARS if key("test", m) in metrics}
    return {"classes_with_lineage": known, "metrics": found}


def calibration(model: Classifier, logits: torch.Tensor, labels: torch.Tensor, out: Path):
    """ECE and NLL of the test split before and after the checkpoint's temperature, and the
    reliability diagram (``reliability.png``); ``None`` without test images."""
    if not len(labels):
        return None
    t = model.temperature
    curves = {}
    found: dict[str, Any] = {"temperature": t}
    for name, temp in (("before", 1.0), ("after", t)):
        found |= {f"{k}_{name}": v for k, v in scores(logits, labels, temp).items()}
        bins = reliability(softmax(logits, temp), labels.numpy())
        curves[f"{name} (T={temp:.2f})"] = (bins, found[f"ece_{name}"])
    save(reliability_figure(curves), out / "reliability.png")
    return found


def audit(
    cfg: DictConfig,
    model: Classifier,
    datamodule: ClassifierData,
    spec: InputSpec,
    device: torch.device,
    out: Path,
) -> dict[str, Any]:
    """The audit that fits the test records (cue boxes or not), on the inputs the model is
    tested on (``spec``) and the trainer's device, written to ``bias_audit.csv``; and, where
    ``audit.discover`` says (``auto``: when they have no cue boxes), the cues nobody boxed
    (``discovered_cues.csv``/``.png``, ``discovered_boxes.csv``) under ``discovery``."""
    records = datamodule.records["test"]
    settings = build(cfg.audit, "audit")
    chosen = choose_audit(records, settings, datamodule.max_pixels)
    net = model.net.to(device)
    start = time.perf_counter()
    rows = chosen.run(net, datamodule.root, records, model.class_names, spec)
    tables.write_csv(out / "bias_audit.csv", rows)
    gallery = chosen.save_gallery(out / "audit_gallery.png")
    seconds = time.perf_counter() - start
    discover = settings.discover is True or (settings.discover == "auto" and chosen.kind != "cue")
    found = None
    if discover:
        start = time.perf_counter()
        found = discover_split(
            net, Path(datamodule.root), records, model.class_names, spec, settings.discovery,
            out, datamodule.max_pixels,
        )  # fmt: skip
        found["seconds"] = round(time.perf_counter() - start, 2)
    return {
        "seconds": round(seconds, 2),
        "kind": chosen.kind,
        "title": chosen.title,
        "legend": chosen.legend,
        "rows": rows,
        "min_images": settings.min_images,
        "skipped_images": chosen.skipped,
        "gallery": gallery.name if gallery else None,
        "discovery": found,
    }


def pictures(callbacks: list[Any], out: Path) -> tuple[dict[str, str], list[str]]:
    """The figures and Grad-CAM galleries the callbacks wrote at test, relative to ``out``."""
    figures: dict[str, str] = {}
    galleries: list[str] = []
    for cb in callbacks:
        if isinstance(cb, SavesFiles):
            saved = cb.saved_files()
            figures |= {k: str(p.relative_to(out)) for k, p in saved.figures.items()}
            galleries += [str(p.relative_to(out)) for p in saved.galleries]
    return figures, galleries


def log_tables(
    trainer: L.Trainer,
    found: dict[str, list],
    audit_rows: list[dict],
    discovered: dict[str, Any] | None,
    out: Path,
) -> None:
    """The tables in TensorBoard's TEXT tab (the figures are there already, by the callbacks),
    and the discovered cues' picture in its IMAGES tab."""
    tabled = [*found.items(), ("bias_audit", audit_rows)]
    if discovered is not None:
        tabled.append(("discovered_cues", discovered["rows"]))
    picture = discovered and discovered.get("gallery")
    image = np.asarray(Image.open(out / picture).convert("RGB")) if picture else None
    for w in tensorboard_writers(trainer):
        for name, rows in tabled:
            w.add_text(f"evaluate/{name}", tables.to_markdown(rows), 0)
        if image is not None:
            w.add_image("evaluate/discovered_cues", image, 0, dataformats="HWC")
        w.flush()


def near_duplicates(datamodule: ClassifierData, out: Path) -> dict[str, Any] | None:
    """The data's near-duplicate clusters, with a side-by-side picture of the largest few
    (``near_duplicates.png``)."""
    found = datamodule.near_duplicate_summary()
    if found and found["examples"]:
        figure = side_by_side(datamodule.root, found["examples"], out / "near_duplicates.png")
        found["figure"] = figure.name if figure else None
    return found


def check_settings(cfg: DictConfig) -> dict[str, float]:
    """``prior_weight`` and ``uncertain_below``, checked before any work."""
    return {
        "prior_weight": setting(cfg, "prior_weight", float, non_negative, "a number >= 0"),
        "uncertain_below": setting(
            cfg, "uncertain_below", float, lambda v: 0 <= v <= 1, "in [0, 1]"
        ),
    }


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path``; returns the summary written to ``metrics.json``."""
    check_targets(cfg)
    require_checkpoint(cfg)
    ckpt = Path(cfg.ckpt_path)
    model = load_classifier(ckpt)  # missing, truncated or foreign: a config error, before work
    spec = checked_spec(model, cfg.get("preprocess") or {})
    build(cfg.cam, "cam")  # its errors before any work, named by the keys a user sets
    build(cfg.audit, "audit")
    settings = check_settings(cfg)
    out = Path(cfg.paths.output_dir)
    callbacks = build_all(cfg.get("callbacks"), "callbacks")
    loggers = build_all(cfg.get("logger"), "logger")
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    datamodule = load_data(cfg, ckpt, model, spec)

    logits = CollectTestLogits()
    trainer.callbacks.append(logits)
    metrics, confusion = run_test(trainer, model, datamodule)
    names = model.class_names
    found = write_tables(out, confusion, model, datamodule, cfg.top_pairs)
    weight = settings["prior_weight"]
    gain, log_final, labels = final_answers(weight, model, datamodule, logits, out)
    device = trainer.strategy.root_device
    calibrated = calibration(model, *logits.result(), out)
    figures, galleries = pictures(callbacks, out)
    if calibrated is not None:
        figures["reliability"] = "reliability.png"
    summary = EvaluationSummary(
        checkpoint=str(ckpt),
        metrics=metrics,
        class_names=names,
        chance_accuracy=1 / len(names),
        test_confusion=confusion.record(),
        taxonomy=taxonomy_summary(model, metrics),
        dataset=dataset_report([r for recs in datamodule.records.values() for r in recs]),
        calibration=calibrated,
        per_class=found["per_class"],
        confused_pairs=found["confused_pairs"],
        figures=figures,
        gradcam=galleries,
        near_duplicates=near_duplicates(datamodule, out),
        place_prior=gain,
        coverage=coverage(model, log_final, labels, settings["uncertain_below"], out),
        open_set=open_set(model, datamodule, logits, device, out),
    )
    summary.audit = audit(cfg, model, datamodule, spec, device, out)
    summary.discovery = summary.audit.pop("discovery")
    written = to_record(summary)  # what metrics.json, report.md and the card read
    write_json(out / run_files.METRICS, written)
    report = write_report(out, written)
    write_card(out, read_checkpoint(ckpt), ckpt.name, audit_findings(written["audit"]))
    log_tables(trainer, found, written["audit"]["rows"], written.get("discovery"), out)
    log.info("report: %s", report)
    acc = key("test", "acc")
    print(f"evaluate: {acc}={metrics.get(acc, float('nan')):.4f} -> {report}")
    return written
