"""Resuming an interrupted training run in its own folder, with its own config.

``python train.py resume=<run dir>`` (or ``resume=true hydra.run.dir=<run dir>``) is rewritten
by :func:`resume_argv` into that run's original overrides plus ``hydra.run.dir=<run dir>``;
the train task then continues from ``<run dir>/checkpoints/last.ckpt`` (see
:func:`resume_checkpoint`). Logs, checkpoints and TensorBoard curves continue in place.

A Slurm job started again in the same folder — requeued at its time limit by the submitit
launcher (``hydra.launcher.max_num_timeout``), preempted, or ``scontrol requeue``-d — continues
the same way without being asked: Slurm counts the restarts in ``SLURM_RESTART_COUNT``.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra.core.override_parser.types import Override
from hydra.errors import OverrideParseException
from omegaconf import DictConfig, OmegaConf

from inat_lightning import run_files
from inat_lightning.config import CONF, ConfigError  # CONF: where a saved group may point
from inat_lightning.runs.overrides import key_of, parse, quote, value_text

SAVED, LAST_CHECKPOINT = run_files.SAVED_OVERRIDES, run_files.LAST_CHECKPOINT
NAME = re.compile(r"[A-Za-z0-9_]+")
#: what resume_argv adds to a run's overrides: bookkeeping, not settings (no sweep column)
BOOKKEEPING_KEYS = {"resume", "run_name"}

log = logging.getLogger(__name__)


def slurm_restarts() -> int:
    """How many times Slurm has started this job again (requeue, preemption, node failure)."""
    try:
        return max(0, int(os.environ.get("SLURM_RESTART_COUNT", "0")))
    except ValueError:
        return 0


def resume_argv(argv: list[str]) -> list[str]:
    """``argv`` with ``resume=<run dir>`` expanded: the run's saved overrides first, then the
    other arguments of this command (they win), then ``hydra.run.dir``, ``resume=true`` and
    the run's TensorBoard run name. In a multirun (``-m``), ``resume=<sweep dir>`` (or a job's
    folder) becomes ``resume=<job dir>,<job dir>,...``: one job per unfinished job of the sweep,
    which the Slurm launcher expands in turn (:func:`resumed_job`).
    Any other ``argv`` (no resume, overrides Hydra cannot parse) is returned unchanged; a
    missing run dir is left to :func:`resume_checkpoint`, which names the key.
    Saved overrides that choose code (``_target_``, Hydra callbacks or launchers) are a
    :class:`ConfigError`: a run folder may come from someone else."""
    args = argv[1:]
    roots = (CONF, *config_dirs(args))
    # run folders of sweep jobs are named by their overrides ("0_a=1,b=2"), which Hydra's grammar
    # cannot read unquoted: these two keys take the rest of the argument as a path, as typed
    paths = {a.split("=", 1)[0]: _path_value(a) for a in args if _is_path_arg(a)}
    try:
        given = parse(a for a in args if "=" in a and not a.startswith("-") and not _is_path_arg(a))
    except OverrideParseException:
        return argv  # Hydra reports it
    resume = paths.get("resume")
    if resume in (None, False, ""):
        return argv
    if "-m" in args or "--multirun" in args:
        if resume is True or "," in str(resume) and not Path(str(resume)).is_dir():
            return argv  # already a list of job folders (or Hydra's sweep of its own)
        if "hydra/launcher=slurm" not in args:  # the default launcher cannot place a job
            raise ConfigError(
                f"resume={resume} in a multirun continues its jobs as Slurm jobs: add "
                "hydra/launcher=slurm (on this machine, one run at a time: resume=<job dir>)"
            )
        jobs = jobs_to_resume(Path(str(resume)))
        kept = [a for a in args if not a.startswith("resume=")]
        return [argv[0], *kept, "resume=" + ",".join(quote(j) for j in jobs)]
    run_dir = Path(str(paths.get("hydra.run.dir", "")) if resume is True else str(resume))
    if not (run_dir / SAVED).is_file():  # quoted for Hydra: resume_checkpoint names the key
        return [argv[0], *(_quoted(a) if _is_path_arg(a) else a for a in args)]
    mine = [o.input_line for o in given]
    mine += [a for a in args if "=" not in a or a.startswith("-")]  # flags, as given
    taken = {key_of(o) for o in given}
    tail = [f"hydra.run.dir={quote(run_dir)}", "resume=true", *_run_name(run_dir, taken)]
    return [argv[0], *saved_overrides(run_dir, taken, roots), *mine, *tail]


def config_dirs(args: Sequence[str]) -> list[Path]:
    """The user's own config folders this command adds (Hydra's ``--config-dir``/``-cd``):
    with the project's, the folders a resumed run's group choices may point into."""
    found = []
    for i, arg in enumerate(args):
        if arg in ("--config-dir", "-cd") and i + 1 < len(args):
            found.append(Path(args[i + 1]))
        elif arg.startswith(("--config-dir=", "-cd=")):
            found.append(Path(arg.split("=", 1)[1]))
    return found


def hydra_config_dirs(config: DictConfig) -> list[Path]:
    """The file config folders a running Hydra app was given on its command line (its
    ``runtime.config_sources``): :func:`config_dirs` for a launcher, after Hydra read them."""
    sources = OmegaConf.select(config, "hydra.runtime.config_sources") or []
    return [
        Path(s.path)
        for s in sources
        if s.get("provider") == "command-line" and s.get("schema") == "file"
    ]


def saved_overrides(run_dir: Path, taken: set[str], roots: Sequence[Path] = (CONF,)) -> list[str]:
    """The overrides ``run_dir`` was started with, but the keys in ``taken`` (this command's:
    they win) and the bookkeeping of an earlier resume; checked (see :func:`resume_argv`): what
    this command sets itself is the user's choice, not the folder's, and a group choice must
    be an option in ``roots`` (the project's configs and the user's ``--config-dir``)."""
    dropped = taken | BOOKKEEPING_KEYS | {"ckpt_path"}
    saved = parse(yaml.safe_load((run_dir / SAVED).read_text()) or [])
    original = [o for o in saved if key_of(o) not in dropped]
    unsafe = [o.input_line for o in original if _builds_code(o.input_line, key_of(o))]
    if unsafe:
        raise ConfigError(
            f"resume={run_dir}: its {SAVED} sets {unsafe[0]!r}; a run folder may "
            "choose settings, not which code to build (_target_ or any hydra setting)"
        )
    foreign = [o.input_line for o in original if not _known_choice(o, roots)]
    if foreign:
        where = " or ".join(str(r) for r in roots)
        raise ConfigError(
            f"resume={run_dir}: its {SAVED} sets {foreign[0]!r}; a run folder may "
            f"choose only the config groups and options of the project's conf/ and the "
            f"--config-dir given ({where})"
        )
    return [o.input_line for o in original]


def _run_name(run_dir: Path, taken: set[str]) -> list[str]:
    """``run_name=<its TensorBoard run>``: a resumed run keeps its curves, whatever order a sweep
    gave its name."""
    tensorboard = run_dir / "tensorboard"
    runs = [p.name for p in tensorboard.iterdir() if p.is_dir()] if tensorboard.is_dir() else []
    return [f"run_name={quote(runs[0])}"] if len(runs) == 1 and "run_name" not in taken else []


def jobs_to_resume(folder: Path) -> list[Path]:
    """The job folders a multirun ``resume=<folder>`` continues: the folder itself when it is a
    run (``.hydra/overrides.yaml``), else every job of that sweep without its ``metrics.json``
    (unfinished: stopped, killed, cancelled). Anything else is a :class:`ConfigError`."""
    if (folder / SAVED).is_file():
        return [folder.resolve()]
    if not (folder / "multirun.yaml").is_file():
        raise ConfigError(
            f"resume={folder}: not a run folder (no {SAVED}) nor a sweep folder (no multirun.yaml)"
        )
    jobs = sorted(p.parent.parent.resolve() for p in folder.glob(f"*/{SAVED}"))
    unfinished = [j for j in jobs if not (j / run_files.METRICS).is_file()]
    if not unfinished:
        raise ConfigError(f"resume={folder}: all {len(jobs)} jobs of this sweep have finished")
    return unfinished


def resumed_job(
    overrides: list[str], roots: Sequence[Path] = (CONF,)
) -> tuple[list[str], Path] | None:
    """A multirun job given ``resume=<job dir>``: the overrides that continue that job in its
    own folder (its saved overrides, then the others of this job, then its sweep folder and
    name), and the job folder; ``None`` for a job that resumes nothing."""
    found = [o for o in overrides if o.startswith("resume=")]
    resume = _path_value(found[-1]) if found else None
    if resume in (None, False, True, ""):
        return None
    run_dir = Path(str(resume))
    if not (run_dir / SAVED).is_file():
        raise ConfigError(f"resume={run_dir}: not a run folder (expected {run_dir / SAVED})")
    others = [o for o in overrides if not o.startswith("resume=")]
    taken = {key_of(o) for o in parse(others)}
    tail = [
        f"hydra.sweep.dir={quote(run_dir.parent)}",
        f"hydra.sweep.subdir={quote(run_dir.name)}",
        # stopped before its first checkpoint: it starts again, in its folder
        *(["resume=true"] if (run_dir / LAST_CHECKPOINT).is_file() else []),
        *_run_name(run_dir, taken),
    ]
    return [*saved_overrides(run_dir, taken, roots), *others, *tail], run_dir


def _known_choice(override: Override, roots: Sequence[Path] = (CONF,)) -> bool:
    """A saved override that selects a config group must name a group and options that exist in
    one of ``roots`` (plain names: no path, no ``..``); a plain key=value passes."""
    key = key_of(override)
    groups = [root / key for root in roots if (root / key).is_dir()]
    if "/" not in key and not groups:
        return True  # a value (model.optimizer.lr=0.1), not a group choice
    if not (NAME.fullmatch(key.replace("/", "_")) and groups):
        return False
    if override.is_delete():
        return True
    value = override.value()
    options = value if isinstance(value, list) else [value]
    return (
        all(
            isinstance(o, str)
            and NAME.fullmatch(o)
            and any((group / f"{o}.yaml").is_file() for group in groups)
            for o in options
        )
        or value is None
    )


def _builds_code(override: str, key: str) -> bool:
    """Whether a saved override could choose code: a ``_target_``, or any Hydra setting (its
    callbacks, launcher, logging config — whose handlers name classes — or search path).
    Hydra keeps its own overrides out of ``overrides.yaml``: a genuine run folder has none."""
    return "_target_" in override or key == "hydra" or key.startswith(("hydra.", "hydra/"))


def _is_path_arg(arg: str) -> bool:
    return arg.startswith(("resume=", "hydra.run.dir="))


def _quoted(arg: str) -> str:
    """``key=<path>`` with the path quoted when Hydra's grammar cannot read it as typed."""
    try:
        parse([arg])
    except OverrideParseException:
        key, _, value = arg.partition("=")
        return f"{key}={quote(value)}"
    return arg


def _path_value(arg: str) -> object:
    """The value of ``key=value`` as Hydra reads it (``true``, ``null``, a quoted path); the
    text as typed when Hydra's grammar cannot read it as one value (``=`` or ``,`` in it)."""
    try:
        (override,) = parse([arg])
    except OverrideParseException:
        return arg.split("=", 1)[1]
    return value_text(override) if override.is_sweep_override() else override.value()


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint a training run continues from: ``ckpt_path`` if set, else with ``resume``
    (or in a Slurm job started again, when there is one) the run folder's
    ``checkpoints/last.ckpt``; ``None`` to start fresh. A missing file is a
    :class:`ConfigError` naming the key; so is a file that is not a readable checkpoint."""
    from inat_lightning.models.checkpoint import read_checkpoint  # torch: only when needed

    if cfg.get("ckpt_path"):
        read_checkpoint(cfg.ckpt_path)
        return str(cfg.ckpt_path)
    resume = cfg.get("resume")
    last = Path(cfg.paths.output_dir) / LAST_CHECKPOINT
    if resume in (None, False):
        if slurm_restarts() and last.is_file():  # a requeued job, in the folder it began
            read_checkpoint(last, key="resume")
            log.info("Slurm restart %d: continuing from %s", slurm_restarts(), last)
            return str(last)
        return None
    if resume is not True:  # a path that resume_argv did not expand
        raise ConfigError(
            f"resume={resume}: not a run folder (expected {resume}/.hydra/overrides.yaml)"
        )
    if not last.is_file():
        raise ConfigError(
            f"resume={resume}: no {LAST_CHECKPOINT} in {cfg.paths.output_dir} to resume from "
            "(use resume=<run dir>, the folder holding .hydra/ and checkpoints/)"
        )
    read_checkpoint(last, key="resume")
    return str(last)
