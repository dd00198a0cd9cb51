"""The analysis task behind ``evaluate.py``: test a checkpoint on its run's test split and write
metrics, per-class and look-alike tables, figures, Grad-CAM galleries, the bias audit and one
``report.md`` gathering them — to the run dir and to TensorBoard."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning.pytorch as L
import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from inat_lightning.analysis import figures, tables
from inat_lightning.analysis.audit import cue_audit, faithfulness
from inat_lightning.analysis.callbacks import tensorboard_writers
from inat_lightning.analysis.report import write_report
from inat_lightning.config import ConfigError, build, build_all, check_targets
from inat_lightning.models.classifier import Classifier

log = logging.getLogger(__name__)


def restore_data_config(cfg: DictConfig, ckpt: Path) -> DictConfig:
    """The training run's data config, with its ``splits.csv`` pinned, so the test split is the
    same one; falls back to ``cfg.data`` when the checkpoint is not inside a run folder."""
    run_dir = ckpt.resolve().parent.parent
    saved, splits = run_dir / ".hydra" / "config.yaml", run_dir / "splits.csv"
    if not cfg.get("restore_data", True) or not saved.is_file():
        log.info("using data from this command's config")
        return cfg.data
    data = OmegaConf.load(saved).data
    with open_dict(data):
        if splits.is_file():
            data.split.file = str(splits)
        data.splits_out = str(Path(cfg.paths.output_dir) / "splits.csv")
        for key, value in (cfg.get("data_overrides") or {}).items():
            OmegaConf.update(data, key, value, merge=False)
    log.info("restored data config and split of %s", run_dir)
    return data


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Evaluate ``cfg.ckpt_path``; returns the summary written to ``metrics.json``."""
    check_targets(cfg)
    if not cfg.get("ckpt_path"):
        raise ConfigError(
            "ckpt_path: required, e.g. ckpt_path=logs/train/runs/<run>/checkpoints/last.ckpt"
        )
    ckpt = Path(cfg.ckpt_path)
    if not ckpt.is_file():
        raise ConfigError(f"ckpt_path={str(ckpt)!r}: no such checkpoint")
    audit_cfg = build(cfg.audit, "audit")
    out = Path(cfg.paths.output_dir)
    callbacks = build_all(cfg.get("callbacks"), "callbacks")
    loggers = build_all(cfg.get("logger"), "logger")
    trainer: L.Trainer = build(cfg.trainer, "trainer", callbacks=callbacks, logger=loggers)
    datamodule = build(restore_data_config(cfg, ckpt), "data")
    try:
        datamodule.setup("test")
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"data: {e}") from e
    model = Classifier.load_from_checkpoint(ckpt, map_location="cpu")
    if model.class_names != datamodule.class_names:
        raise ConfigError(
            f"data: classes {datamodule.class_names} differ from the checkpoint's "
            f"{model.class_names}"
        )

    trainer.test(model, datamodule=datamodule)
    metrics = {k: float(v) for k, v in sorted(trainer.callback_metrics.items()) if v.numel() == 1}
    cm = model.confusion_matrix("test").cpu().numpy()
    names = model.class_names
    per_class = tables.per_class_table(cm, names)
    pairs = tables.most_confused_pairs(cm, names, top=cfg.top_pairs)
    tables.write_csv(out / "per_class.csv", per_class)
    tables.write_csv(out / "confused_pairs.csv", pairs)
    figures.save(
        figures.confusion_matrix_figure(cm, names, cfg.max_matrix_classes),
        out / "confusion_matrix.png",
    )
    figures.save(figures.per_class_bars(per_class), out / "per_class.png")

    net = model.net.to(torch.device("cpu"))
    test_records = datamodule.records["test"]
    if any(r.cue_box is not None for r in test_records):
        audit = {
            "kind": "cue",
            "rows": cue_audit(
                net, datamodule.root, test_records, names, datamodule.image_size, audit_cfg
            ),
        }
    else:
        audit = {
            "kind": "faithfulness",
            "rows": faithfulness(
                net, datamodule.root, test_records, names, datamodule.image_size, audit_cfg
            ),
        }
    tables.write_csv(out / "bias_audit.csv", audit["rows"])

    galleries = [p for cb in callbacks for p in getattr(cb, "written", [])]
    summary = {
        "checkpoint": str(ckpt),
        "metrics": metrics,
        "class_names": names,
        "chance_accuracy": 1 / len(names),
        "test_confusion_matrix": cm.tolist(),
        "per_class": per_class,
        "confused_pairs": pairs,
        "audit": audit,
        "gradcam": [str(p.relative_to(out)) for p in galleries],
    }
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    report = write_report(out, summary)
    for w in tensorboard_writers(trainer):
        w.add_text("evaluate/per_class", tables.to_markdown(per_class), 0)
        w.add_text("evaluate/confused_pairs", tables.to_markdown(pairs), 0)
        w.add_text("evaluate/bias_audit", tables.to_markdown(audit["rows"]), 0)
        w.add_figure("evaluate/per_class", figures.per_class_bars(per_class), 0)
        w.flush()
    log.info("report: %s", report)
    print(f"evaluate: test/acc={metrics.get('test/acc', float('nan')):.4f} -> {report}")
    return summary
