"""``python <script> ...`` and ``python -m <module> ...`` in a fresh process that starts with the
stack already imported.

Importing torch, torchvision and Lightning costs 4-5 s of a core per process: most of a tiny CLI
run, and most of the suite's time once summed. A ``forkserver`` (the standard library's) imports
them once; each run is a fork of it, a process of its own (its own ``sys.argv``, working folder,
environment, Hydra and Lightning state, signals, exit status, stdout and stderr) that runs the
real script as ``__main__``. What a fork cannot show, a fresh interpreter failing to import the
project, the README test shows: its first training runs in a new shell
(``tests/house/test_readme.py``).
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
import runpy
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

# what the forkserver imports before its first fork: the entry points' own modules
PRELOAD = [
    "tests.helpers.warm",
    "inat_lightning.training",
    "inat_lightning.evaluation",
    "inat_lightning.prediction",
]


def _become(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str | None) -> None:
    """In the fork: become ``python *argv``, stdout to ``out``, stderr to ``err`` (or ``out``)."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, path in ((1, out), (2, err or out)):
        opened = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(opened, fd)
        os.close(opened)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    # a forkserver's child inherits "forkserver" as its start method, and its DataLoader workers
    # would then start from a new, cold forkserver (2-3 s each time): back to the platform's
    # default, as in a fresh interpreter
    multiprocessing.set_start_method(None, force=True)
    if env.get("OMP_NUM_THREADS", "").isdigit():  # read by a fresh interpreter's torch at import
        import torch  # preloaded: the forkserver imported it

        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    code: int | str | None = 0
    try:
        if argv[0] == "-m":
            sys.argv = [argv[1], *argv[2:]]  # run_module puts the module's file first
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:
        code = stop.code
    except BaseException:  # noqa: BLE001 - what an interpreter does with an uncaught error
        traceback.print_exc()
        code = 1
    finally:
        atexit._run_exitfuncs()  # a fork's exit skips them: TensorBoard writers, logging
        sys.stdout.flush()
        sys.stderr.flush()
    if isinstance(code, str):
        print(code, file=sys.stderr, flush=True)
        code = 1
    os._exit(code or 0)


def start(
    argv: list[str], *, cwd: Path, env: dict[str, str], out: Path, err: Path | None = None
) -> multiprocessing.Process:
    """Start ``python *argv`` (``[script, ...]`` or ``["-m", module, ...]``) in a warm fork,
    its stdout written to ``out`` and its stderr to ``err`` (default: ``out`` too); like
    ``subprocess.Popen``, the process runs on: ``join``, ``exitcode``, ``kill``, ``pid``."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    for path in (out, err or out):
        Path(path).write_bytes(b"")  # there from the start, as a Popen's redirect would be
    args = ([str(a) for a in argv], str(cwd), env, str(out), None if err is None else str(err))
    proc = ctx.Process(target=_become, args=args)
    proc.start()
    return proc


def run(
    argv: list[str], *, cwd: Path, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess:
    """``python *argv`` in a warm fork, waited for: what ``subprocess.run(..., text=True,
    capture_output=True, timeout=...)`` answers."""
    cmd = [sys.executable, *map(str, argv)]
    with tempfile.TemporaryDirectory(prefix="warm-") as tmp:
        out, err = Path(tmp) / "out", Path(tmp) / "err"
        proc = start(argv, cwd=cwd, env=env, out=out, err=err)
        proc.join(timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            raise subprocess.TimeoutExpired(cmd, timeout)
        text = [p.read_text(errors="replace") if p.exists() else "" for p in (out, err)]
    return subprocess.CompletedProcess(cmd, proc.exitcode, *text)
