"""Multirun sweep summary: one table (CSV and Markdown) of every job's overrides and metrics,
and, for a k-fold sweep (``data.split.fold=0,1,…``), the mean ± std over folds
(``cv_summary.csv`` and a section of ``summary.md``).

:class:`SweepSummary` is a Hydra callback (``conf/hydra/default.yaml``): after each job and at
the end of a ``-m`` sweep (grid, Optuna, SLURM alike) it rewrites ``summary.csv`` and
``summary.md`` in the sweep folder from the jobs' ``.hydra/overrides.yaml`` and ``metrics.json``,
so a half-finished or crashed sweep still has a table of what ran.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from pathlib import Path
from typing import Any

import yaml
from hydra.core.utils import JobReturn
from hydra.errors import OverrideParseException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig

from inat_lightning import run_files
from inat_lightning.atomic import replacing
from inat_lightning.models.metric_names import headline
from inat_lightning.runs.names import round_sample
from inat_lightning.runs.overrides import key_of, parse, value_text
from inat_lightning.runs.resume import BOOKKEEPING_KEYS
from inat_lightning.runs.slurm_jobs import JobOutcome, read_outcomes

log = logging.getLogger(__name__)

METRICS = headline("val", "test")


def _job_overrides(job_dir: Path) -> dict[str, str]:
    path = job_dir / run_files.SAVED_OVERRIDES
    if not path.is_file():  # killed before Hydra wrote it: listed, with no settings
        return {}
    items = parse(yaml.safe_load(path.read_text()) or [])
    # a resumed job's bookkeeping is not a setting
    return {key_of(o): value_text(o) for o in items if key_of(o) not in BOOKKEEPING_KEYS}


def job_number(job_dir: Path) -> int:
    """A sweep job's number, from its folder's name (``3_lr=0.1`` → 3); -1 for another name."""
    head = job_dir.name.split("_", 1)[0]
    return int(head) if head.isdigit() else -1


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder of a sweep: ``job``, ``status``, ``overrides`` (dict), metrics
    (``METRICS`` plus ``best/<monitor>``, NaN when missing) and ``run_dir``. The status is
    ``done``, ``failed or running``, or what the Optuna sweeper recorded (``pruned``,
    ``failed``)."""
    rows = []
    slurm = {o.job: o for o in read_outcomes(sweep_dir)}  # a Slurm sweep's job states
    job_dirs = [p.parent for p in Path(sweep_dir).glob("*/.hydra")]
    for job_dir in sorted(job_dirs, key=lambda p: (job_number(p), p.name)):
        summary_file = job_dir / run_files.METRICS
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        metrics = summary.get("metrics", {})
        best = summary.get("best") or {}
        trial_file = job_dir / run_files.TRIAL  # written by the Optuna sweeper
        trial = json.loads(trial_file.read_text()) if trial_file.is_file() else {}
        status = "done" if summary else "failed or running"
        if trial.get("state") in ("pruned", "fail"):
            status = "pruned" if trial["state"] == "pruned" else "failed"
        row: dict[str, Any] = {
            "job": job_number(job_dir),
            "status": status,
            "overrides": _job_overrides(job_dir),
            **{k: float(metrics.get(k, math.nan)) for k in METRICS},
        }
        if best.get("monitor"):
            row[f"best/{best['monitor']}"] = float(best.get("score", math.nan))
        row["run_dir"] = job_dir.name
        _add_slurm_state(row, slurm.pop(row["job"], None))
        rows.append(row)
    for outcome in slurm.values():  # ended before Hydra made its folder (cancelled, no room...)
        try:
            overrides = {key_of(o): value_text(o) for o in parse(outcome.overrides)}
        except OverrideParseException:  # an edited record: left out, never an error
            continue
        row = {
            "job": outcome.job,
            "status": "failed or running",
            "overrides": overrides,
            **{k: math.nan for k in METRICS},
            "run_dir": "",
        }
        _add_slurm_state(row, outcome)
        rows.append(row)
    return sorted(rows, key=lambda r: r["job"])


def _add_slurm_state(row: dict[str, Any], outcome: JobOutcome | None) -> None:
    """A Slurm job's id and final state in ``row["slurm"]``; a failed job's status is its state
    (``failed: CANCELLED``)."""
    if outcome is None:
        return
    row["slurm"] = f"{outcome.slurm_id} {outcome.state}"
    if not outcome.ok:
        row["status"] = f"failed: {outcome.state}"


def _table(rows: list[dict[str, Any]], short: bool = False) -> tuple[list[str], list[list[str]]]:
    """Columns: the overrides that differ between jobs (``short``: floats to 4 digits), then
    the metrics."""
    keys = sorted({k for r in rows for k in r["overrides"]})
    known = [r for r in rows if r["overrides"]] or rows  # a sweep's jobs all have overrides
    varying = [k for k in keys if len({r["overrides"].get(k) for r in known}) > 1] or keys
    named = ("job", "status", "overrides", "run_dir", "slurm")
    metric_cols = [c for c in rows[0] if c not in named]
    for r in rows[1:]:
        metric_cols += [c for c in r if c.startswith("best/") and c not in metric_cols]
    slurm = ["slurm"] if any("slurm" in r for r in rows) else []
    header = ["job", *varying, *metric_cols, "status", *slurm, "run_dir"]
    body = []
    for r in rows:
        values = [r["overrides"].get(k, "") for k in varying]
        cells = [str(r["job"]), *(map(round_sample, values) if short else values)]
        cells += [_fmt(r.get(c, math.nan)) for c in metric_cols]
        body.append([*cells, r["status"], *(r.get(c, "") for c in slurm), r["run_dir"]])
    return header, body


FOLD_KEY = "data.split.fold"


def fold_summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Cross-validation: the finished jobs grouped by their overrides other than
    ``data.split.fold``, one row per group with ``folds`` (how many finished) and each metric's
    mean and sample standard deviation (``<metric> mean`` / ``<metric> std``; std NaN with one
    fold). Empty when no job sets a fold."""
    done = [r for r in rows if FOLD_KEY in r["overrides"] and r["status"] == "done"]
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in done:
        setting = tuple(sorted((k, v) for k, v in r["overrides"].items() if k != FOLD_KEY))
        groups.setdefault(setting, []).append(r)
    metric_cols = [c for c in (rows[0] if rows else {}) if c.startswith(("val/", "test/", "best/"))]
    out = []
    for setting, members in groups.items():
        row: dict[str, Any] = {
            "setting": " ".join(f"{k}={v}" for k, v in setting if k != "data.split.folds") or "-",
            "folds": len(members),
        }
        for c in metric_cols:
            values = [m[c] for m in members if not math.isnan(m.get(c, math.nan))]
            mean = sum(values) / len(values) if values else math.nan
            var = (
                sum((v - mean) ** 2 for v in values) / (len(values) - 1)
                if len(values) > 1
                else math.nan
            )
            row[f"{c} mean"], row[f"{c} std"] = mean, math.sqrt(var)
        out.append(row)
    return out


def _fold_lines(folds: list[dict[str, Any]]) -> list[str]:
    """The Markdown section of :func:`fold_summary`: ``mean ± std`` cells."""
    if not folds:
        return []
    metrics = [c.removesuffix(" mean") for c in folds[0] if c.endswith(" mean")]
    lines = [
        "",
        "## Cross-validation: mean ± std over folds (sample std)",
        "",
        "| setting | folds | " + " | ".join(metrics) + " |",
        "|" + "---|" * (2 + len(metrics)),
    ]
    for f in folds:
        cells = [
            ""
            if math.isnan(f[f"{m} mean"])
            else f"{f[f'{m} mean']:.4f} ± {_fmt(f[f'{m} std']) or 'n/a'}"
            for m in metrics
        ]
        lines.append(f"| {f['setting']} | {f['folds']} | " + " | ".join(cells) + " |")
    return lines


GROUP_KEY = "data.split.group_by"


def _observer_gap(rows: list[dict[str, Any]]) -> list[str]:
    """When jobs differ by ``data.split.group_by``: each headline test metric held out by
    observation and by observer, and the gap (what the model owes to knowing the observer)."""
    by = {r["overrides"].get(GROUP_KEY): r for r in rows if r["status"] == "done"}
    if not {"observation", "observer"} <= set(by):
        return []
    lines = ["", "## Held-out observers", ""]
    for metric in (m for m in METRICS if m.startswith("test/")):
        a, b = by["observation"].get(metric, math.nan), by["observer"].get(metric, math.nan)
        if not (math.isnan(a) or math.isnan(b)):
            lines.append(
                f"- {metric}: {a:.4f} split by observation, {b:.4f} by observer: "
                f"gap {a - b:+.4f} (positive: the model does worse on people it has not seen)"
            )
    return lines


def _fmt(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.4f}"


def write_summary(sweep_dir: str | Path, optimized_metric: str | None = None) -> Path | None:
    """Write ``summary.csv`` and ``summary.md`` into ``sweep_dir``; returns the Markdown path
    (``None`` when no job folder exists yet). Writes are atomic: parallel jobs may call it."""
    sweep_dir = Path(sweep_dir)
    rows = collect(sweep_dir)
    if not rows:
        return None
    header, body = _table(rows)
    buf = io.StringIO()
    csv.writer(buf).writerows([header, *body])
    lines = [f"# Sweep summary: {sweep_dir.name}", ""]
    scored = [r for r in rows if not math.isnan(r.get(optimized_metric or "", math.nan))]
    if scored:
        pick = min if "loss" in optimized_metric else max
        top = pick(scored, key=lambda r: r[optimized_metric])
        lines += [f"Best {optimized_metric}: {top[optimized_metric]:.4f} (job {top['job']})", ""]
    # the Markdown table rounds sampled values and leaves out the (long) folder names
    header, body = _table(rows, short=True)
    lines += ["| " + " | ".join(header[:-1]) + " |", "|" + "---|" * (len(header) - 1)]
    lines += ["| " + " | ".join(cells[:-1]) + " |" for cells in body]
    folds = fold_summary(rows)
    lines += _fold_lines(folds)
    lines += _observer_gap(rows)
    texts = {"summary.csv": buf.getvalue(), "summary.md": "\n".join(lines) + "\n"}
    if folds:
        cv = io.StringIO()
        writer = csv.DictWriter(cv, fieldnames=list(folds[0]))
        writer.writeheader()
        writer.writerows(
            {k: _fmt(v) if isinstance(v, float) else v for k, v in f.items()} for f in folds
        )
        texts["cv_summary.csv"] = cv.getvalue()
    for name, text in texts.items():
        with replacing(sweep_dir / name) as part:
            part.write_text(text)
    return sweep_dir / "summary.md"


class SweepSummary(Callback):
    """Hydra callback: keeps ``<sweep dir>/summary.{csv,md}`` up to date during a multirun
    and when one of its jobs is resumed."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if config.hydra.mode == RunMode.MULTIRUN:
            write_summary(config.hydra.sweep.dir, config.get("optimized_metric"))
            return
        # a sweep job resumed on its own (resume=<job dir>) updates its sweep's table
        sweep_dir = Path(config.hydra.runtime.output_dir).parent
        if (sweep_dir / "multirun.yaml").is_file():
            write_summary(sweep_dir, config.get("optimized_metric"))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = write_summary(config.hydra.sweep.dir, config.get("optimized_metric"))
        if path is not None:
            log.info("sweep summary: %s (and summary.csv)", path)
