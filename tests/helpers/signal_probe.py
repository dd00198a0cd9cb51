"""``python -m tests.helpers.signal_probe [--quiet] <file>``: a job process's view of Slurm's
time-limit signal. The process installs a USR2 handler (as submitit does), optionally
:func:`~inat_lightning.runs.job_signals.quiet_forked_children`, then reads a dataset with two
DataLoader workers (the default) whose items each send USR2 to their own process, then one to
itself. The handler appends the pid it runs in to ``<file>``; the process prints a JSON line:
the items read and its own pid."""

from __future__ import annotations

import json
import os
import signal
import sys

import torch
from torch.utils.data import DataLoader, Dataset

from inat_lightning.runs.job_signals import quiet_forked_children


class SignalsItself(Dataset):
    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        os.kill(os.getpid(), signal.SIGUSR2)
        return torch.tensor(i)


def main() -> None:
    marker = sys.argv[-1]

    def handler(signum, frame):  # a file: what a worker records in memory dies with it
        with open(marker, "a") as f:
            f.write(f"{os.getpid()}\n")

    signal.signal(signal.SIGUSR2, handler)
    if "--quiet" in sys.argv:
        quiet_forked_children()
    items = [int(x) for b in DataLoader(SignalsItself(), batch_size=2, num_workers=2) for x in b]
    os.kill(os.getpid(), signal.SIGUSR2)  # the job's own process still acts on it
    print(json.dumps({"items": sorted(items), "main": os.getpid()}))


if __name__ == "__main__":
    main()
