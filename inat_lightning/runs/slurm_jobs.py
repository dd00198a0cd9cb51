"""What became of each Slurm job of a sweep: ``<sweep dir>/slurm_jobs.csv``, one row per job
(its number in the sweep, Slurm id, final Slurm state, overrides, one-line reason, log path).

The launcher (:mod:`.slurm`) writes it when its jobs end; the sweep summary reads it, so a job
that was cancelled, ran out of time or memory, or failed is listed with its state even when it
died before writing anything in its own folder. No submitit here: the summary runs anywhere.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from filelock import FileLock
from hydra.errors import CompactHydraException

from inat_lightning.atomic import replacing

FILE = "slurm_jobs.csv"
#: the state of a job whose task returned its result
DONE = "COMPLETED"
#: Slurm states that are their own reason (the job's last words would only mislead: a cancelled
#: job's DataLoader reports its workers killed)
SELF_EXPLAINED = ("CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "PREEMPTED", "NODE_FAIL", "DEADLINE")


class JobFailed(CompactHydraException):
    """A sweep job's task failed: the message is one line (the task's error), what the sweep's
    user reads; raised in the job (so Slurm records ``FAILED``) and returned to the sweeper."""


@dataclass
class JobOutcome:
    """One job of a sweep, as it ended."""

    job: int
    slurm_id: str
    state: str
    overrides: list[str]
    reason: str = ""
    log: str = ""

    @property
    def ok(self) -> bool:
        return self.state == DONE

    def line(self) -> str:
        """``job 1 (Slurm 57_1, FAILED) [model.optimizer.lr=-5]: <reason>; log: <path>``."""
        said = self.reason if self.reason and not self.state.startswith(SELF_EXPLAINED) else ""
        head = f"job {self.job} (Slurm {self.slurm_id}, {self.state}) [{' '.join(self.overrides)}]"
        return f"{head}: {said + '; ' if said else ''}log: {self.log}"


def one_line(error: BaseException) -> str:
    """``Type: first line of the message`` of a task's error."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}".rstrip(": ")


def write_outcomes(sweep_dir: str | Path, outcomes: list[JobOutcome]) -> Path:
    """Merge ``outcomes`` into ``<sweep_dir>/slurm_jobs.csv`` (a job reported again replaces its
    row), under a lock and atomically: no writer loses another's rows, no reader sees half a
    file."""
    path = Path(sweep_dir) / FILE
    with FileLock(path.with_name(f".{FILE}.lock")):  # two searches may share a sweep folder
        rows = {o.job: o for o in read_outcomes(sweep_dir)} | {o.job: o for o in outcomes}
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=[f.name for f in fields(JobOutcome)])
        writer.writeheader()
        writer.writerows(
            {**asdict(rows[k]), "overrides": json.dumps(rows[k].overrides)} for k in sorted(rows)
        )
        with replacing(path) as part:
            part.write_text(buf.getvalue())
    return path


def read_outcomes(sweep_dir: str | Path) -> list[JobOutcome]:
    """The rows of ``<sweep_dir>/slurm_jobs.csv`` (none when absent); a row that is not one of
    ours (edited, truncated) is left out."""
    path = Path(sweep_dir) / FILE
    if not path.is_file():
        return []
    out = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            try:
                overrides = json.loads(row["overrides"])
                if not (isinstance(overrides, list) and all(isinstance(o, str) for o in overrides)):
                    continue
                out.append(JobOutcome(**{**row, "job": int(row["job"]), "overrides": overrides}))
            except (TypeError, ValueError, KeyError):
                continue
    return out
