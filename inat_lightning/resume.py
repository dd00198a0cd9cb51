"""Resuming an interrupted training run in its own folder, with its own config.

``python train.py resume=<run dir>`` (or ``resume=true hydra.run.dir=<run dir>``) is rewritten
by :func:`resume_argv` into that run's original overrides plus ``hydra.run.dir=<run dir>``;
the train task then continues from ``<run dir>/checkpoints/last.ckpt`` (see
:func:`resume_checkpoint`). Logs, checkpoints and TensorBoard curves continue in place.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from omegaconf import DictConfig

from inat_lightning.resolvers import override_key

FALSE = {"false", "False", "null", "None", ""}
LAST = Path("checkpoints") / "last.ckpt"
ADDED_KEYS = {"resume", "run_name"}  # what resume_argv adds: bookkeeping, not settings


def resume_argv(argv: list[str]) -> list[str]:
    """``argv`` with ``resume=<run dir>`` expanded: the run's saved overrides first, then the
    other arguments of this command (they win), then ``hydra.run.dir``, ``resume=true`` and
    the run's TensorBoard run name.
    Any other ``argv`` is returned unchanged; a missing run dir is left to the train task's
    config check, which names the key."""
    args = argv[1:]
    values = {override_key(a): a.split("=", 1)[1] for a in args if "=" in a}
    resume = values.get("resume")
    if resume is None or resume in FALSE or "-m" in args or "--multirun" in args:
        return argv
    run_dir = Path(values.get("hydra.run.dir", "").strip("'\"") if resume == "true" else resume)
    saved = run_dir / ".hydra" / "overrides.yaml"
    if not saved.is_file():
        return argv
    mine = [a for a in args if override_key(a) not in ("resume", "hydra.run.dir")]
    taken = {override_key(a) for a in mine}
    original = yaml.safe_load(saved.read_text()) or []
    dropped = taken | ADDED_KEYS | {"ckpt_path"}
    kept = [o for o in original if override_key(o) not in dropped]
    tail = [f"hydra.run.dir={_quote(run_dir)}", "resume=true"]
    # keep the TensorBoard run, whatever order a sweep gave its name
    tensorboard = run_dir / "tensorboard"
    runs = [p.name for p in tensorboard.iterdir() if p.is_dir()] if tensorboard.is_dir() else []
    if len(runs) == 1 and "run_name" not in taken:
        tail.append(f"run_name={_quote(runs[0])}")
    return [argv[0], *kept, *mine, *tail]


def _quote(value: object) -> str:
    """A Hydra override value that may hold ``,``, ``=`` or spaces."""
    return "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"


def resume_checkpoint(cfg: DictConfig) -> str | None:
    """The checkpoint to continue from: ``ckpt_path`` if set, else with ``resume`` the run
    folder's ``checkpoints/last.ckpt``; ``None`` to start fresh. Raises ``FileNotFoundError``
    naming the key when the file is missing."""
    if cfg.get("ckpt_path"):
        if not Path(cfg.ckpt_path).is_file():
            raise FileNotFoundError(f"ckpt_path={cfg.ckpt_path!r}: no such checkpoint")
        return str(cfg.ckpt_path)
    resume = cfg.get("resume")
    if resume in (None, False) or str(resume) in FALSE:
        return None
    if resume is not True:  # a path that resume_argv did not expand
        raise FileNotFoundError(
            f"resume={resume}: not a run folder (expected {resume}/.hydra/overrides.yaml)"
        )
    last = Path(cfg.paths.output_dir) / LAST
    if not last.is_file():
        raise FileNotFoundError(
            f"resume={resume}: no {LAST} in {cfg.paths.output_dir} to resume from "
            "(use resume=<run dir>, the folder holding .hydra/ and checkpoints/)"
        )
    return str(last)
