"""The analysis task behind ``evaluate.py``: test a checkpoint on its run's test split and write
metrics, per-class and look-alike tables, figures, Grad-CAM galleries, the bias audit and one
``report.md`` gathering them — to the run dir and to TensorBoard.

:func:`evaluate` reads as its steps: load → test → tables → audit → galleries → summary and
report → TensorBoard."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from inat_lightning.analysis import tables
from inat_lightning.analysis.audit import choose_audit
from inat_lightning.analysis.data_bias import dataset_report
from inat_lightning.analysis.figures import reliability_figure, save
from inat_lightning.analysis.report import audit_findings, write_report
from inat_lightning.analysis.results import EvaluationSummary, to_record, write_json
from inat_lightning.analysis.tiles import side_by_side
from inat_lightning.callbacks.outputs import CollectTestLogits
from inat_lightning.callbacks.saved import SavesFiles
from inat_lightning.callbacks.writers import tensorboard_writers
from inat_lightning.checks import require_checkpoint
from inat_lightning.config import ConfigError, build, build_all, check_targets
from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.models.calibration import reliability, scores, softmax
from inat_lightning.models.card import write_card
from inat_lightning.models.checkpoint import checked_spec, load_classifier, read_checkpoint
from inat_lightning.models.classifier import Classifier
from inat_lightning.models.confusion import Confusion
from inat_lightning.models.metrics import TAXONOMY_SCALARS, key, scalar_metrics
from inat_lightning.models.spec import InputSpec, pin_input_spec
from inat_lightning.runs.overrides import command_data_changes

log = logging.getLogger(__name__)


def restore_data_config(cfg: DictConfig, ckpt: Path) -> DictConfig:
    """The training run's data config, with its ``splits.csv`` pinned, so the test split is the
    same one; then this command's ``data.*`` overrides (and ``data_overrides``) on top. Falls
    back to ``cfg.data`` when the checkpoint is not inside a run folder or
    ``restore_data=false``: the run folder is read only for what only it has (the data and its
    split), never for how inputs are made (the checkpoint says that)."""
    run_dir = ckpt.resolve().parent.parent
    saved, splits = run_dir / ".hydra" / "config.yaml", run_dir / "splits.csv"
    if not cfg.get("restore_data", True) or not saved.is_file():
        log.info("using data from this command's config")
        return cfg.data.copy()
    data = _saved_data(saved)
    _check_restorable(data, saved)
    changed = command_data_changes(cfg)
    with open_dict(data):
        if splits.is_file():
            data.split.file = str(splits)
        data.splits_out = str(Path(cfg.paths.output_dir) / "splits.csv")
        for name, value in changed.items():
            OmegaConf.update(data, name, value, merge=False)
    log.info("restored data config and split of %s (changed: %s)", run_dir, changed or "nothing")
    return data


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


#: what a run folder's saved config may build: a shared run folder must not run other code
RESTORABLE_TARGETS = {
    "inat_lightning.data.datamodule.ImageFolderDataModule",
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


def _check_restorable(data: DictConfig, saved: Path) -> None:
    """Refuse a saved data config that would build anything but this project's data classes."""
    foreign = sorted(_targets(OmegaConf.to_container(data, resolve=False)) - RESTORABLE_TARGETS)
    if foreign:
        raise ConfigError(
            f"ckpt_path: the run's {saved} would build {', '.join(foreign)}; only this project's "
            "data classes are built from a run folder (restore_data=false uses this command's data)"
        )


def load_data(
    cfg: DictConfig, ckpt: Path, model: Classifier, spec: InputSpec
) -> ImageFolderDataModule:
    """The data module, test split set up; its classes must be the checkpoint's. The data
    config used is saved as ``data.yaml`` in the run folder."""
    data = data_config(cfg, ckpt, spec)
    OmegaConf.save(data, Path(cfg.paths.output_dir) / "data.yaml")
    datamodule = build(data, "data")
    try:
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
    trainer: L.Trainer, model: Classifier, datamodule: ImageFolderDataModule
) -> tuple[dict[str, float], Confusion]:
    """Test metrics and the test confusion counts (the callbacks draw figures and galleries)."""
    trainer.test(model, datamodule=datamodule, weights_only=True)
    return scalar_metrics(trainer.callback_metrics), model.confusion("test")


def write_tables(
    out: Path,
    confusion: Confusion,
    model: Classifier,
    datamodule: ImageFolderDataModule,
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
    model: Classifier,
    datamodule: ImageFolderDataModule,
    collected: CollectTestLogits,
) -> Path:
    """``test_predictions.csv``: each readable test photo's true class, top-1 answer and its
    calibrated probability, as the test loop computed them."""
    logits, labels = collected.result()
    records = datamodule.records["test"]
    names = model.class_names
    probs = softmax(logits, model.temperature) if len(labels) else np.zeros((0, len(names)))
    rows = [
        {
            "photo_id": records[i].photo_id,
            "path": records[i].path,
            "true": names[int(y)],
            "prediction": names[int(p.argmax())],
            "probability": round(float(p.max()), 6),
        }
        for i, y, p in zip(collected.indices().tolist(), labels.tolist(), probs)
    ]
    tables.write_csv(out / "test_predictions.csv", rows)
    return out / "test_predictions.csv"


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
    datamodule: ImageFolderDataModule,
    spec: InputSpec,
    device: torch.device,
    out: Path,
) -> dict[str, Any]:
    """The audit that fits the test records (cue boxes or not), on the inputs the model is
    tested on (``spec``) and the trainer's device, written to ``bias_audit.csv``."""
    records = datamodule.records["test"]
    settings = build(cfg.audit, "audit")
    chosen = choose_audit(records, settings, datamodule.max_pixels)
    net = model.net.to(device)
    rows = chosen.run(net, datamodule.root, records, model.class_names, spec)
    tables.write_csv(out / "bias_audit.csv", rows)
    gallery = chosen.save_gallery(out / "audit_gallery.png")
    return {
        "kind": chosen.kind,
        "title": chosen.title,
        "legend": chosen.legend,
        "rows": rows,
        "min_images": settings.min_images,
        "skipped_images": chosen.skipped,
        "gallery": gallery.name if gallery else None,
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


def log_tables(trainer: L.Trainer, found: dict[str, list], audit_rows: list[dict]) -> None:
    """The tables in TensorBoard's TEXT tab (the figures are there already, by the callbacks)."""
    for w in tensorboard_writers(trainer):
        for name, rows in (*found.items(), ("bias_audit", audit_rows)):
            w.add_text(f"evaluate/{name}", tables.to_markdown(rows), 0)
        w.flush()


def near_duplicates(datamodule: Any, out: Path) -> dict[str, Any] | None:
    """The data's near-duplicate clusters, with a side-by-side picture of the largest few
    (``near_duplicates.png``)."""
    found = datamodule.near_duplicate_summary()
    if found and found["examples"]:
        figure = side_by_side(datamodule.root, found["examples"], out / "near_duplicates.png")
        found["figure"] = figure.name if figure else None
    return found


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path``; returns the summary written to ``metrics.json``."""
    check_targets(cfg)
    require_checkpoint(cfg)
    ckpt = Path(cfg.ckpt_path)
    model = load_classifier(ckpt)  # missing, truncated or foreign: a config error, before work
    spec = checked_spec(model, cfg.get("preprocess") or {})
    build(cfg.audit, "audit")  # its errors before any work
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
    write_test_predictions(out, model, datamodule, logits)
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
    )
    summary.audit = audit(cfg, model, datamodule, spec, trainer.strategy.root_device, out)
    written = to_record(summary)  # what metrics.json, report.md and the card read
    write_json(out / "metrics.json", written)
    report = write_report(out, written)
    write_card(out, read_checkpoint(ckpt), ckpt.name, audit_findings(written["audit"]))
    log_tables(trainer, found, written["audit"]["rows"])
    log.info("report: %s", report)
    acc = key("test", "acc")
    print(f"evaluate: {acc}={metrics.get(acc, float('nan')):.4f} -> {report}")
    return written
