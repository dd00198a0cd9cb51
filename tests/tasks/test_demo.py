"""make demo: trains on the biased set, evaluates, says what the bias audit found, and ends with
three places to look, all of which exist."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from inat_lightning.demo import RECIPE, command, train_args
from tests.helpers.cli import REPO, SMALL


def test_the_demo_recipe_comes_first_unless_another_experiment_is_named():
    assert train_args(["seed=1", "hydra.run.dir=x"]) == [RECIPE, "seed=1"]
    assert train_args(["experiment=cpu_quick", "seed=1"]) == ["experiment=cpu_quick", "seed=1"]


def test_demo_help_explains_the_demo_and_its_arguments(tmp_path):
    res = subprocess.run(
        [sys.executable, "-m", "inat_lightning.demo", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "usage: inat-demo [OVERRIDES...]" in res.stdout and RECIPE in res.stdout
    assert not (tmp_path / "logs").exists()  # nothing trained


def test_the_demo_runs_the_clone_s_scripts_and_the_installed_package_s_module(tmp_path):
    assert command("train.py") == [sys.executable, str(REPO / "train.py")]  # in the clone
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("inat_lightning.demo.REPO", tmp_path)  # a wheel: site-packages, no scripts
        want = [sys.executable, "-m", "inat_lightning.cli", "evaluate"]
        assert command("evaluate.py") == want
    res = subprocess.run(
        [sys.executable, "-m", "inat_lightning.cli", "nosuch"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0
    tasks = "train,evaluate,predict,scrape,shards"
    assert f"usage: python -m inat_lightning.cli {{{tasks}}}" in res.stderr


@pytest.mark.slow
def test_demo_ends_with_report_gallery_and_tensorboard_that_exist(tmp_path):
    cmd = [sys.executable, "-m", "inat_lightning.demo", *SMALL, "trainer.max_epochs=1"]
    env = {"INAT_LIGHTNING_ROOT": str(tmp_path), "PATH": "/usr/bin:/bin"}
    res = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    tail = res.stdout[res.stdout.index("Look next:") :]
    report = Path(re.search(r"1\. the report:\s+(\S+)", tail).group(1))
    gallery = Path(re.search(r"2\. the Grad-CAM galleries:\s+(\S+)", tail).group(1))
    tensorboard = re.search(r"3\. TensorBoard:\s+make tensorboard RUN=(\S+)", tail).group(1)
    assert report.name == "report.md" and "## Grad-CAM" in report.read_text()
    assert len(list(gallery.glob("*.png"))) >= 4  # one per species
    run = Path(tensorboard)
    assert (run / "metrics.json").is_file() and list(run.rglob("events.out.tfevents.*"))
    assert run.is_relative_to(tmp_path) and report.is_relative_to(run)
    # the recipe trained on the biased set, and the audit's verdict is said before "Look next"
    assert OmegaConf.load(run / ".hydra" / "config.yaml").data.synthetic.cue_species == 0
    evaluated = json.loads((report.parent / "metrics.json").read_text())
    assert evaluated["audit"]["kind"] == "cue"
    said = res.stdout[res.stdout.index("Bias audit") : res.stdout.index("Look next:")]
    verdicts = [line.strip() for line in said.strip().splitlines()[1:]]
    judged = [
        r
        for r in evaluated["audit"]["rows"]
        if r["verdict"] and r["cued_images"] >= evaluated["audit"]["min_images"]
    ]
    assert judged and len(verdicts) == len(judged)
    for line, row in zip(verdicts, judged):  # each judged row, in the words and numbers saved
        assert line.startswith(f"{row['class']}: {row['verdict']} (")
        assert f"{row['acc_drop']:+.2f}" in line and f"{row['energy_lift']:.1f}x" in line
    assert "## Findings" in report.read_text()
    # discovery ran beside the audit (it never reads the boxes) and its finding is said
    assert evaluated["discovery"]["examined_photos"] > 0
    assert "Discovery (not told where the hand is" in res.stdout.split("Bias audit")[0]
    # the data and the answers beyond the pixels, without extra flags: said and in the report
    text = report.read_text()
    for section in ("## Near-duplicate photos", "## Where and when", "## Saying less when unsure"):
        assert section in text, section
    assert (report.parent / "risk_coverage.png").stat().st_size > 1000
    prior = evaluated["place_prior"]
    assert f"({prior['gain']:+.3f})" in res.stdout and "Near-duplicates:" in res.stdout
