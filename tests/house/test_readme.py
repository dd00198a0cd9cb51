"""The commands of the README and of the docs site's pages (``docs/**/*.md``) work as written,
so neither can drift from the CLI. Each command of their ```bash blocks runs as in a new shell
(no venv on PATH) after the README's own activation line: the setup training in such a shell;
every other ``python`` command with that shell's environment, in a process of its own that
starts with the stack imported (``tests/helpers/warm.py``: 4-5 s less each); other commands in
a new shell. Placeholders
(``<run>``, ``ckpt_path=...``, ``/path/to/root``) become real folders and files; training
commands get a tiny model and ``fast_dev_run`` appended. Commands that need the internet, a GPU
or a cluster are composed only (``--cfg job``: every group, key and value must exist); ``make``
targets are dry-run (``make -n``), ``make help`` runs; a sweep over more than two folds runs its
first and last."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from torchvision.models import detection

from inat_lightning.data.manifest import scan_image_folder, write_manifest
from inat_lightning.models.backbones import resnet
from inat_lightning.runs.overrides import parse
from tests.helpers import warm
from tests.helpers.cli import REPO, SMALL
from tests.helpers.data import make_image_folder

ACTIVATE = "source .venv/bin/activate"
FAST = [*SMALL, "++trainer.fast_dev_run=true"]  # in logs/train, as the README says
SYNTHETIC_ONLY = tuple(o for o in SMALL if o.startswith("data.synthetic."))
OFFLINE_IMPOSSIBLE = re.compile(
    r"scrape\.py|trainer=gpu|_gpu\b|trainer\.devices=[3-9]|trainer\.num_nodes|hydra/launcher=slurm"
    r"|s3://"  # an object store: the shard tests run a real one (tests/tasks/test_shards_cli.py)
)
#: a data option other than the embedded set's: the tiny run's synthetic keys do not apply
OWN_DATA = ("data=imagefolder", "data=shards")


#: the README and every page of the docs site
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def readme_commands() -> list[str]:
    """Every command of the ```bash blocks of the README and the docs: continuations joined,
    comments dropped."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"(^|\s)#\s.*$", "", line).strip()
            if line:
                commands.append(" ".join(line.split()))
    return commands


def fresh_env(root: Path) -> dict[str, str]:
    """A new shell's environment: no venv on PATH, runs and data under ``root``."""
    venv_bin = str(REPO / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if p != venv_bin)
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    return {**env, "PATH": path, "INAT_LIGHTNING_ROOT": str(root), "PYTHONUNBUFFERED": "1"}


def shell(command: str, env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    """``command`` after the README's activation line, in bash, from the repo root."""
    script = f"set -e\n{ACTIVATE}\n{command}\n"
    return subprocess.run(
        ["bash", "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def activated(env: dict[str, str]) -> dict[str, str]:
    """The environment of a new shell after the README's activation line, plus one torch thread
    per process: the commands run two at a time, and torch's spinning threads would contend."""
    res = shell("env -0", env)
    assert res.returncode == 0, res.stderr
    found = dict(kv.split("=", 1) for kv in res.stdout.split("\0") if "=" in kv)
    return {**found, "OMP_NUM_THREADS": "1"}


def execute(command: str, env: dict[str, str], python_env: dict[str, str]):
    """``python ...`` in a warm process with ``python_env``; anything else in a new shell."""
    words = shlex.split(command)
    if words[0] == "python":
        return warm.run(words[1:], cwd=REPO, env=python_env, timeout=600)
    return shell(command, env)


def first_of_sweeps(args: list[str]) -> list[str]:
    """``a=1,2`` → ``a=1``: a multirun's first job, for composing its config."""
    out = []
    for arg in args:
        try:
            (override,) = parse([arg]) if "=" in arg and not arg.startswith("-") else (None,)
        except Exception:  # noqa: BLE001 - not an override: keep it as typed
            override = None
        if override is not None and override.is_sweep_override():
            arg = f"{arg.split('=', 1)[0]}={override.value().list[0]}"
        out.append(arg)
    return out


def ends_of_sweeps(args: list[str]) -> list[str]:
    """``fold=0,1,2,3,4`` → ``fold=0,4``: a sweep's first and last jobs (every key and both
    ends of each range still run; the sweeper itself is tested elsewhere)."""
    out = []
    for arg in args:
        key, _, value = arg.partition("=")
        values = value.split(",")
        if key.startswith("data.split.fold") and len(values) > 2:
            arg = f"{key}={values[0]},{values[-1]}"
        out.append(arg)
    return out


def plan(command: str, subs: dict[str, str]) -> tuple[str, str]:
    """(how, the command to run): ``run``, ``compose``, ``dry-run`` or ``exists``."""
    for placeholder, value in subs.items():
        if placeholder == "logs/":  # a relative logs/ path, not one inside a substituted path
            command = re.sub(r"(?<![\w/.])logs/", value, command)
        else:
            command = command.replace(placeholder, value)
    words = shlex.split(command)
    if words[0] == "make":
        return ("run", command) if words[1] == "help" else ("dry-run", f"make -n {words[1]}")
    if words[0] == "tensorboard":
        return "exists", "command -v tensorboard && tensorboard --version"
    if words[:2] == ["python", "-m"] and words[2].startswith("bench."):
        return "exists", f"python -m {words[2]} --help"
    shards = words[:3] == ["python", "-m", "inat_lightning.shards"]
    if shards and OFFLINE_IMPOSSIBLE.search(command):
        return "compose", shlex.join([*words, "--cfg", "job"])
    if words[0] == "python" and words[1].endswith(".py"):
        args = [w for w in words[2:] if w != "..."]
        if OFFLINE_IMPOSSIBLE.search(command):  # internet, GPUs or a cluster: compose only
            args = [a for a in first_of_sweeps(args) if a not in ("-m", "--multirun")]
            return "compose", shlex.join(["python", words[1], *args, "--cfg", "job"])
        if words[1] == "train.py" and "--help" not in args:
            own = any(a in args for a in OWN_DATA)
            extra = [o for o in FAST if not (own and o in SYNTHETIC_ONLY)]
            if "hparams_search=optuna_sgd" in args:
                extra.append("hydra.sweeper.n_trials=2")
            args = ends_of_sweeps(args) + extra
        return "run", shlex.join(["python", words[1], *args])
    return "run", command


def failures(results: list) -> str:
    return "\n\n".join(
        f"{how} (exit {res.returncode}): {cmd}\n{res.stderr[-1500:] or res.stdout[-1500:]}"
        for (how, cmd), res in results
        if res.returncode != 0
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict[str, str], dict[str, str]]:
    """A root with one real tiny run, image folders and weights where the README points."""
    root = tmp_path_factory.mktemp("readme")
    env = fresh_env(root)
    run = root / "logs" / "train" / "runs" / "setup"
    res = shell(
        shlex.join(["python", "train.py", *SMALL, "trainer.max_epochs=1", f"hydra.run.dir={run}"]),
        env,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    summary = json.loads((run / "metrics.json").read_text())
    photos = make_image_folder(root / "photos", {n: 6 for n in summary["class_names"]}, 32)
    records = scan_image_folder(photos)  # a manifest, as scrape.py leaves one
    for r in records:
        r.width = r.height = 32
    write_manifest(photos / "manifest.csv", records)
    (root / "boxes.csv").write_text(
        f"photo_id,x0,y0,x1,y1,label\n{records[0].photo_id},1,1,9,9,hand\n"
    )
    coco = {
        "images": [{"id": 1, "file_name": records[1].path}],
        "annotations": [{"image_id": 1, "bbox": [2, 2, 5, 5], "category_id": 1}],
        "categories": [{"id": 1, "name": "person"}],
    }
    (root / "instances.json").write_text(json.dumps(coco))
    frcnn = detection.fasterrcnn_mobilenet_v3_large_fpn(weights=None, weights_backbone=None)
    torch.save(frcnn.state_dict(), root / "frcnn.pth")
    weights = root / "resnet18.pth"
    torch.save(resnet(18, 4).state_dict(), weights)
    best = Path(summary["best_checkpoint"])
    subs = {
        "ckpt_path=...": f"ckpt_path={best}",
        "<run>": run.name,
        "<best>": best.stem,
        "logs/": f"{root}/logs/",
        "data/inat": str(photos),
        "/path/to/root": str(photos),
        "/other/photos": str(photos),
        "/path/to/resnet101.pth": str(weights),
        "boxes.csv": str(root / "boxes.csv"),
        "instances.json": str(root / "instances.json"),
        "frcnn.pth": str(root / "frcnn.pth"),
    }
    return root, env, subs


@pytest.mark.slow
def test_every_readme_command_runs_from_a_fresh_shell(world):
    root, env, subs = world
    commands = readme_commands()
    assert ACTIVATE in commands, "the README must say how to activate the venv"
    commands = [c for c in dict.fromkeys(commands) if c != ACTIVATE]  # each once
    venv = activated(env)
    assert venv["VIRTUAL_ENV"] == str(REPO / ".venv")
    # those that read what others write (a sweep folder, a shard set) run last
    later = [c for c in commands if "<time>" in c or "/searches/" in c or "data=shards" in c]
    first = [plan(c, subs) for c in commands if c not in later]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda p: (p, execute(p[1], env, venv)), first))
    assert not failures(results), failures(results)
    sweeps = sorted((root / "logs" / "train" / "multiruns").iterdir())
    for command in later:
        how_cmd = plan(command.replace("<time>", sweeps[0].name), subs)
        results.append((how_cmd, execute(how_cmd[1], env, venv)))
    assert not failures(results), failures(results)
    hows = {how for (how, _), _ in results}
    assert {"run", "compose", "dry-run", "exists"} <= hows


def test_the_readme_commands_are_parsed_as_written():
    commands = readme_commands()
    assert "make demo" in commands and "make test" in commands and ACTIVATE in commands
    long = next(c for c in commands if "hydra.sweeper.n_trials=50" in c)
    assert long.endswith("data=imagefolder data.root=data/inat")  # continuation joined
    how, cmd = plan("python scrape.py ... scrape.user_agent='me (x@y.org)'", {})
    assert how == "compose" and "..." not in cmd and cmd.endswith("--cfg job")
    how, cmd = plan("python train.py -m hydra/launcher=slurm model.optimizer.lr=0.1,0.01", {})
    assert how == "compose" and "-m" not in shlex.split(cmd) and "model.optimizer.lr=0.1" in cmd


def test_the_hostile_inputs_table_counts_the_cases_the_suite_runs():
    """docs/hostile_inputs.md: each row naming one test gives its number of collected cases."""
    text = (REPO / "docs" / "hostile_inputs.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| [^|]+ \| (\d+)[^|]* \| `(tests/[\w/.]+\.py)::(\w+)` \|", text, re.M)
    assert len(rows) >= 15
    files = sorted({f for _, f, _ in rows})
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout
    collected: dict[str, int] = {}
    for line in out.splitlines():
        if "::" in line:
            key = line.split("[", 1)[0]
            collected[key] = collected.get(key, 0) + 1
    for count, path, name in rows:
        assert collected.get(f"{path}::{name}") == int(count), (path, name, count)
