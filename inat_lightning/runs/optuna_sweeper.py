"""A Hydra sweeper driving Optuna 5 (``hydra/sweeper=inat_optuna``, used by
``hparams_search=…``): persistent studies that survive a crash, several processes (or SLURM
jobs) sharing one study, and pruning.

Why our own: ``hydra-optuna-sweeper`` pins ``optuna<3`` and keeps the study in memory. This one
keeps the same search-space syntax (Hydra's sweep grammar: ``choice(16, 32)``,
``interval(0.8, 0.99)``, ``tag(log, interval(1e-5, 1e-3))``, ``int(interval(0, 3))``,
``range(1, 5)``) and adds:

* **storage**: any SQLAlchemy URL (default: SQLite in the sweep folder). Re-running the same
  command loads the study (``load_if_exists``): finished trials are kept and count towards
  ``n_trials``; a trial whose process died (no heartbeat for ``grace_period`` seconds) is marked
  failed and retried with the same parameters (Optuna's ``RetryFailedTrialCallback``);
* **parallel processes**: each process asks the shared study for the next trial; a trial runs
  only when fewer than ``n_trials`` trials with a smaller number are finished or running, so the
  processes together run exactly ``n_trials`` (none twice);
* **pruning**: each job gets its trial's coordinates in its environment; the
  :class:`~inat_lightning.callbacks.pruning.OptunaPruning` callback reports the monitored metric
  every epoch and stops a trial the ``pruner`` gives up on; the trial is recorded as pruned.

Each job's folder gets a ``trial.json`` (number, state, value, parameters), which the sweep
summary reads; ``optimization_results.yaml`` holds the best trial of the whole study.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import threading
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import yaml
from filelock import FileLock
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from inat_lightning import run_files
from inat_lightning.atomic import replacing
from inat_lightning.runs import trial_env
from inat_lightning.runs.optuna_adapter import (
    job_outcome,
    record_heartbeat,
    storage_of,
    trial_id,
)

log = logging.getLogger(__name__)
# heartbeats are "experimental" in every Optuna since 2.8; the warning says nothing to a user
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
DONE = (TrialState.COMPLETE, TrialState.PRUNED)


def distribution(override: Override) -> BaseDistribution | None:
    """The Optuna distribution of a sweep override (``None`` for a plain value)."""
    if not override.is_sweep_override():
        return None
    value = override.value()
    if isinstance(value, ChoiceSweep) or (isinstance(value, RangeSweep) and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(Transformer.encode)))
    if isinstance(value, RangeSweep):
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop) - 1, step=int(value.step))
    if isinstance(value, IntervalSweep):
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(value.start, value.end, log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space Optuna can sample")


def pruner_of(study: optuna.Study) -> optuna.pruners.BasePruner:
    """The pruner the sweeper recorded in the study (only ``optuna.pruners`` classes are built:
    a shared database must not choose code to run); Optuna's default without one."""
    spec = study.user_attrs.get("pruner")
    if not spec:
        return optuna.pruners.MedianPruner()
    target = str(spec.get("_target_", ""))
    if not target.startswith("optuna.pruners."):
        raise ValueError(f"study pruner {target!r}: only optuna.pruners classes are built")
    return instantiate(spec)


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLite: wait up to a minute for a lock held by another process sharing the study,
    instead of failing at once."""
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}


def built(node: Any) -> Any:
    """A sampler or pruner: Hydra builds the sweeper's nested nodes already; a plain mapping is
    built here."""
    return instantiate(node) if isinstance(node, (dict, DictConfig)) else node


def worker_seed(seed: int, worker: int) -> int:
    """The sampler seed of the ``worker``-th process of a study seeded ``seed`` (0: ``seed``)."""
    if not worker:
        return seed
    return int(np.random.SeedSequence([seed, worker]).generate_state(1)[0])


def override_text(key: str, value: Any) -> str:
    """``key=value`` as Hydra reads it back: strings quoted when they need it."""
    if isinstance(value, str) and not value.replace("_", "").replace(".", "").isalnum():
        value = "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"{key}={value}"


class Heartbeat:
    """Records the heartbeat of running trials every ``interval`` seconds, so a crashed
    process's trials can be told from live ones by every process sharing the study."""

    def __init__(self, storage: Any, trial_ids: Sequence[int], interval: int | None) -> None:
        self.storage, self.trial_ids, self.interval = storage, list(trial_ids), interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def _beat(self) -> None:
        while not self._stop.is_set():
            for ident in self.trial_ids:
                self.storage.record_heartbeat(ident)
            self._stop.wait(self.interval)

    def __enter__(self) -> Heartbeat:
        if self.interval and hasattr(self.storage, "record_heartbeat"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()


def shown_url(url: str | None) -> str | None:
    """A storage URL fit to print and keep in a shared folder: its password hidden."""
    if not url:
        return url
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: shown as nothing
        return "<unreadable storage URL>"


def settle(
    study: optuna.Study, trial: optuna.Trial, ret: JobReturn
) -> tuple[TrialState, float | None]:
    """A trial's final state and value: as already told (its job tells the study itself), else
    decided from the job's return and told now: complete with its value, pruned (its callback
    said so), or failed (an exception, or no finite value)."""
    stored = storage_of(study).get_trial(trial_id(trial))
    if stored.state.is_finished():
        return stored.state, stored.value
    value, error = job_outcome(ret)
    if error is not None:
        log.error("trial %d failed: %s", trial.number, error)
        state = TrialState.FAIL
    elif stored.user_attrs.get("pruned_at_epoch") is not None:
        state = TrialState.PRUNED
    elif value is None or not math.isfinite(float(value)):
        log.warning("trial %d returned no value: failed", trial.number)
        state = TrialState.FAIL
    else:
        state = TrialState.COMPLETE
    try:
        if state == TrialState.COMPLETE:
            study.tell(trial, float(value))
        else:
            study.tell(trial, state=state)
    except (RuntimeError, ValueError):  # told meanwhile (its job, or a stale-trial check)
        stored = storage_of(study).get_trial(trial_id(trial))
        return stored.state, stored.value
    return state, float(value) if state == TrialState.COMPLETE else None


def write_trial_record(job_dir: Path, study: optuna.Study, trial: optuna.Trial) -> None:
    """``<job_dir>/trial.json``: the trial as the study holds it (number, state, value,
    parameters, study; the epoch a pruned trial stopped at), for the sweep summary."""
    stored = storage_of(study).get_trial(trial_id(trial))
    record = {
        "number": stored.number,
        "state": stored.state.name.lower(),
        "value": stored.value,
        "params": stored.params,
        "study": study.study_name,
    }
    if stored.state == TrialState.PRUNED:
        record["pruned_at_epoch"] = stored.user_attrs.get("pruned_at_epoch")
    job_dir.mkdir(parents=True, exist_ok=True)
    with replacing(job_dir / run_files.TRIAL) as part:
        part.write_text(json.dumps(record, indent=2))


def rdb_storage(
    url: str | None, heartbeat_interval: int | None, grace_period: int | None, max_retry: int
) -> Any:
    """The study's database (``None``: in memory: one process, no resume, no pruning from the
    jobs), with heartbeats and a retry of stale trials."""
    if not url:
        return None
    # renamed in Optuna 4.9: a stale trial's retry callback and the storage's argument
    retry_class = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", None)
    retry = (retry_class or optuna.storages.RetryFailedTrialCallback)(max_retry=max_retry)
    params = inspect.signature(optuna.storages.RDBStorage).parameters
    hook = (
        "heartbeat_stale_trial_callback"
        if "heartbeat_stale_trial_callback" in params
        else "failed_trial_callback"
    )
    return optuna.storages.RDBStorage(
        url,
        engine_kwargs=engine_kwargs(url),
        heartbeat_interval=heartbeat_interval,
        grace_period=grace_period,
        **{hook: retry},
    )


def search_space(
    params: dict[str, str], arguments: list[str]
) -> tuple[dict[str, BaseDistribution], list[str]]:
    """The search space (``params``, then sweep overrides of the command line) and the fixed
    overrides every job gets. A key given a plain value on the command line is not searched."""
    parser = OverridesParser.create()
    given = parser.parse_overrides(arguments)
    fixed_keys = {o.key_or_group for o in given if not o.is_sweep_override()}
    space: dict[str, BaseDistribution] = {}
    for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]):
        if o.key_or_group not in fixed_keys:
            found = distribution(o)
            if found is not None:
                space[o.key_or_group] = found
    for o in given:
        found = distribution(o)
        if found is not None:
            space[o.key_or_group] = found
    fixed = [o.input_line for o in given if not o.is_sweep_override()]
    return space, fixed


class OptunaSweeper(Sweeper):
    """See the module doc. Arguments are the ``hydra.sweeper`` node's keys (``conf/hydra/
    sweeper/inat_optuna.yaml``)."""

    def __init__(
        self,
        study_name: str,
        storage: str | None,
        direction: str = "maximize",
        n_trials: int = 20,
        n_jobs: int = 1,
        sampler: Any = None,
        pruner: Any = None,
        params: dict[str, str] | None = None,
        enqueue_trials: list[dict[str, Any]] | None = None,
        heartbeat_interval: int | None = 30,
        grace_period: int | None = 120,
        max_retry: int = 3,
    ) -> None:
        if n_trials < 1 or n_jobs < 1:
            raise ValueError("hydra.sweeper: n_trials and n_jobs must be >= 1")
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: maximize or minimize")
        self.study_name, self.storage_url = study_name, storage
        self.direction, self.n_trials, self.n_jobs = direction, n_trials, n_jobs
        self.sampler_cfg, self.pruner_cfg = sampler, pruner
        self.params = dict(params or {})
        self.enqueue_trials = list(enqueue_trials or [])
        self.heartbeat_interval, self.grace_period = heartbeat_interval, grace_period
        self.max_retry = max_retry
        self.config: DictConfig | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.config = config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        self.sweep_dir = Path(config.hydra.sweep.dir)

    # ------------------------------------------------------------------ the study
    def _study(self) -> optuna.Study:
        """Create or load the study; processes starting together take turns (creating a
        SQLite database's tables twice at once fails)."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.sweep_dir / ".study.lock"):
            study = self._open_study()
            if self.storage_url:  # a process joining a shared study: its own sampler seed
                worker = int(study.user_attrs.get("workers_joined", 0))
                study.set_user_attr("workers_joined", worker + 1)
                study.sampler = self._sampler(worker) or study.sampler
            return study

    def _sampler(self, worker: int) -> optuna.samplers.BaseSampler | None:
        """The sampler of the ``worker``-th process to join the study: the configured one with
        its seed derived from the study's seed and that index (reproducible, and distinct: two
        processes with one seed would draw the same parameters); ``None`` keeps the configured
        sampler (the first process, or no seed)."""
        spec = self.config.hydra.sweeper.get("sampler") if self.config is not None else None
        if not worker or spec is None or spec.get("seed") is None:
            return None
        found = OmegaConf.to_container(spec, resolve=True)
        found["seed"] = worker_seed(int(found["seed"]), worker)
        log.info("worker %d of this study: sampler seed %d", worker, found["seed"])
        return instantiate(found)

    def _open_study(self) -> optuna.Study:
        study = optuna.create_study(
            study_name=self.study_name,
            storage=rdb_storage(
                self.storage_url, self.heartbeat_interval, self.grace_period, self.max_retry
            ),
            sampler=built(self.sampler_cfg),
            pruner=built(self.pruner_cfg) or optuna.pruners.NopPruner(),
            direction=self.direction,
            load_if_exists=True,
        )
        # the jobs' pruning callbacks build the same pruner from the study (see pruner_of)
        spec = self.config.hydra.sweeper.get("pruner") if self.config is not None else None
        if spec is not None and self.storage_url:
            study.set_user_attr("pruner", OmegaConf.to_container(spec, resolve=True))
        if self.enqueue_trials and not study.trials:  # only when the study starts
            for params in self.enqueue_trials:
                study.enqueue_trial(dict(params))
        return study

    # ------------------------------------------------------------------ the loop
    def sweep(self, arguments: list[str]) -> None:
        assert self.config is not None
        study = self._study()
        space, fixed = search_space(self.params, arguments)
        log.info(
            "Optuna %s study %r in %s: %d trials, space %s",
            optuna.__version__,
            self.study_name,
            shown_url(self.storage_url) or "memory",
            self.n_trials,
            {k: repr(v) for k, v in space.items()},
        )
        while True:
            if self.storage_url:
                optuna.storages.fail_stale_trials(study)  # a dead process's trial: retried
            trials = study.get_trials(deepcopy=False)
            done = sum(t.state in DONE for t in trials)
            running = sum(t.state == TrialState.RUNNING for t in trials)
            if done >= self.n_trials:
                break
            if done + running >= self.n_trials:  # the last trials are running elsewhere
                if not (self.storage_url and self.heartbeat_interval):
                    break
                time.sleep(min(self.heartbeat_interval, 5))
                continue
            batch = self._ask(study, space, min(self.n_jobs, self.n_trials - done - running))
            if not batch:
                break
            self._run(study, batch, fixed)
        self._write_results(study)

    def _ask(self, study: optuna.Study, space: dict, n: int) -> list[optuna.Trial]:
        """Up to ``n`` new trials; a trial beyond ``n_trials`` (another process got there first)
        is marked failed as surplus instead of run."""
        batch = []
        for _ in range(n):
            trial = study.ask(space)
            if self.storage_url and self.heartbeat_interval:
                # at once: a trial whose process dies before its first heartbeat is never stale
                record_heartbeat(study, trial)
            ahead = [
                t for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number
            ]
            if len(ahead) >= self.n_trials:
                trial.set_user_attr("surplus", True)
                study.tell(trial, state=TrialState.FAIL)
                break
            batch.append(trial)
        return batch

    def _run(self, study: optuna.Study, batch: list[optuna.Trial], fixed: list[str]) -> None:
        jobs = []
        for trial in batch:
            overrides = [*fixed, *(override_text(k, v) for k, v in trial.params.items())]
            if self.storage_url:
                overrides += [
                    override_text(f"+hydra.job.env_set.{trial_env.STORAGE}", self.storage_url),
                    override_text(f"+hydra.job.env_set.{trial_env.STUDY}", study.study_name),
                    f"+hydra.job.env_set.{trial_env.TRIAL}={trial_id(trial)}",
                    f"+hydra.job.env_set.{trial_env.HEARTBEAT}={self.heartbeat_interval or 0}",
                ]
            jobs.append(overrides)
        numbers = [t.number for t in batch]
        consecutive = numbers == list(range(numbers[0], numbers[0] + len(numbers)))
        groups = [(jobs, numbers[0])] if consecutive else [([j], n) for j, n in zip(jobs, numbers)]
        returns: list[JobReturn] = []
        with Heartbeat(storage_of(study), [trial_id(t) for t in batch], self.heartbeat_interval):
            for group, first in groups:  # job folders are numbered by trial
                returns += self.launcher.launch(group, initial_job_idx=first)
        for trial, ret in zip(batch, returns):
            self._tell(study, trial, ret)

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> None:
        """Record a job's outcome in the study (unless its job already did: see
        :mod:`.trial_report`) and in its folder's ``trial.json``."""
        state, value = settle(study, trial, ret)
        if ret.hydra_cfg is not None:
            write_trial_record(Path(ret.hydra_cfg.hydra.runtime.output_dir), study, trial)
        log.info("trial %d: %s %s", trial.number, state.name.lower(), value)

    def _write_results(self, study: optuna.Study) -> None:
        """``optimization_results.yaml``: the study's best trial and its trial counts."""
        trials = study.get_trials(deepcopy=False)
        counts = {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}
        results: dict[str, Any] = {
            "name": "optuna",
            "optuna_version": optuna.__version__,
            "study_name": study.study_name,
            "storage": shown_url(self.storage_url),
            "direction": self.direction,
            "trials": counts,
        }
        if counts["complete"]:
            best = study.best_trial
            results |= {
                "best_trial": best.number,
                "best_params": best.params,
                "best_value": best.value,
            }
        OmegaConf.save(OmegaConf.create(results), self.sweep_dir / "optimization_results.yaml")
        log.info("optimization results: %s", yaml.safe_dump(results, sort_keys=False))
