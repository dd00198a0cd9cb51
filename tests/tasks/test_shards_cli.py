"""``data=shards`` through the real entry points: built by the CLI, trained from a real
S3-compatible server (credentials staying out of every output), resumed mid-epoch exactly, and
under DDP every test photo counted once. All with the default loader workers."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from inat_lightning.data.shards import read_card
from inat_lightning.data.stores import S3Store
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.models.confusion import Confusion
from tests.cluster.s3_server import make_bucket, running
from tests.helpers import warm
from tests.helpers.cli import REPO, kill_at, run_cli, run_dirs, start_train

pytestmark = pytest.mark.slow

#: SMALL's data and model, from shards, with the default loader workers
ON_SHARDS = ["model=resnet18", "data=shards", "data.image_size=32", "data.batch_size=16"]
NO_FIGURES = ["~callbacks.gradcam", "~callbacks.metric_figures"]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """SMALL's synthetic species (4 easy classes), as an ImageFolder with its manifest."""
    root = tmp_path_factory.mktemp("synthetic") / "set"
    SyntheticSpecies(
        num_species=4, lookalikes=False, observations_per_species=100, image_size=48
    ).ensure(root)
    return root


def build(photos: Path, out: str, tmp_path: Path, env: dict[str, str] | None = None) -> None:
    """The README's command, for real: ``python -m inat_lightning.shards build <root> out=…``."""
    argv = ["-m", "inat_lightning.shards", "build", photos, f"out={out}", "shard_photos=40"]
    argv += [f"paths.log_dir={tmp_path / 'logs'}", f"paths.data_dir={tmp_path / 'data'}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    res = warm.run(argv, cwd=REPO, env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "shard set:" in res.stdout


@pytest.fixture(scope="module")
def shard_set(photos, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("shard_set")
    build(photos, str(tmp / "set"), tmp)
    return tmp / "set"


def test_training_from_an_object_store_keeps_its_credentials_out_of_every_output(tmp_path, photos):
    with running() as env:
        make_bucket(env, "lab")
        build(photos, "s3://lab/birds/v1", tmp_path / "build", env)
        os.environ.update(env)
        try:
            card = read_card(S3Store("s3://lab/birds/v1"))
            res = run_cli(
                "train.py", *ON_SHARDS, "data.root=s3://lab/birds/v1", "trainer.max_epochs=1",
                "+trainer.limit_train_batches=3", *NO_FIGURES, tmp_path=tmp_path / "train",
            )  # fmt: skip
            assert res.returncode == 0, res.stderr[-4000:]
            (run,) = run_dirs(tmp_path / "train" / "logs")
            best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
            res = run_cli("evaluate.py", f"ckpt_path={best}", tmp_path=tmp_path / "evaluate")
            assert res.returncode == 0, res.stderr[-4000:]
        finally:
            for key in env:
                os.environ.pop(key, None)
    written = [p for p in (tmp_path / "train").rglob("*") if p.is_file()]
    written += [p for p in (tmp_path / "evaluate").rglob("*") if p.is_file()]
    assert any(p.suffix == ".ckpt" for p in written) and any(p.name == "report.md" for p in written)
    for path in written:
        data = path.read_bytes()
        for secret in (env["AWS_SECRET_ACCESS_KEY"], env["AWS_ACCESS_KEY_ID"]):
            assert secret.encode() not in data, path
    fingerprint = torch.load(best, map_location="cpu", weights_only=False)["hyper_parameters"][
        "data_fingerprint"
    ]  # what the model learned from: the source manifest's, and where the shards were
    assert fingerprint["records_sha256"] == card["fingerprint"]["records_sha256"]
    assert fingerprint["shards"] == "s3://lab/birds/v1"


def test_a_run_killed_mid_epoch_resumes_from_its_place_to_the_uninterrupted_result(
    tmp_path, shard_set
):
    overrides = [
        *ON_SHARDS, f"data.root={shard_set}", f"paths.data_dir={tmp_path / 'data'}",
        "trainer.max_epochs=2", "+trainer.limit_train_batches=16", "trainer.deterministic=true",
        "seed=5", *NO_FIGURES,
        "callbacks.progress_bar.every_s=0", "callbacks.resume_point.every_n_train_steps=4",
    ]  # fmt: skip
    killed = tmp_path / "killed"
    proc = start_train(tmp_path / "killed.log", f"paths.log_dir={killed}", *overrides)
    # past the step-8 resume point of the first epoch (of 16 batches), before step 12's
    kill_at(proc, tmp_path / "killed.log", "epoch 1/2 train: 9/16")
    (run,) = run_dirs(killed)
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["epoch"] == 0 and ckpt["global_step"] in (8,), "not a mid-epoch resume point"
    loader_state = ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    card = json.loads((shard_set / "shards.json").read_text())
    made_with = {"batch_size": 16, "world_size": 1, "photos": card["splits"]["train"]["photos"]}
    made_with |= {"data": int(card["fingerprint"]["records_sha256"][:15], 16), "balanced": 0}
    assert loader_state == [{"epoch": 0, "batches": 8, "of": 16, **made_with, "seed": 5}]
    saved = tmp_path / "saved.ckpt"
    shutil.copy(run / "checkpoints" / "last.ckpt", saved)
    runs = {
        "straight": [f"paths.log_dir={tmp_path / 'straight'}", *overrides],
        "resumed": [f"resume={run}"],
    }
    procs = {k: start_train(tmp_path / f"{k}.log", *args) for k, args in runs.items()}
    for k, p in procs.items():
        p.join(timeout=600)
        assert p.exitcode == 0, (tmp_path / f"{k}.log").read_text()[-3000:]
    want = json.loads((run_dirs(tmp_path / "straight")[0] / "metrics.json").read_text())
    got = json.loads((run / "metrics.json").read_text())
    assert got["metrics"] == want["metrics"]
    assert got["best"] == want["best"] and got["test_confusion"] == want["test_confusion"]
    assert "not resumable" not in (tmp_path / "resumed.log").read_text()
    # another batch size cannot continue that place: one line, before any step
    other = [*overrides, "data.batch_size=8", f"ckpt_path={saved}"]
    res = run_cli("train.py", *other, tmp_path=tmp_path / "other")
    assert res.returncode == 2, res.stderr[-2000:]
    refused = "config error: resume: the checkpoint stopped mid-epoch with batch_size=16, this "
    assert refused + "run has 8" in res.stderr


def test_ddp_from_shards_counts_every_test_photo_once(tmp_path, shard_set):
    res = run_cli(
        "train.py", *ON_SHARDS, f"data.root={shard_set}", "trainer=ddp",
        "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_epochs=1",
        "+trainer.limit_train_batches=4", *NO_FIGURES, tmp_path=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-4000:]
    (run,) = run_dirs(tmp_path / "logs")
    summary = json.loads((run / "metrics.json").read_text())
    confusion = Confusion.from_record(summary["test_confusion"])
    n_test = summary["split_sizes"]["test"]
    assert n_test % 2 == 1  # an odd split: padding would count one twice
    assert confusion.total == n_test
    card = json.loads((shard_set / "shards.json").read_text())
    assert n_test == card["splits"]["test"]["photos"]
