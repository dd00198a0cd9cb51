"""Bad config values fail before any work, with a message naming the key."""

import os
import re
from pathlib import Path

import pytest
import yaml

from inat_lightning.checks import check_train_config
from inat_lightning.cli import clone_root
from inat_lightning.config import ConfigError
from inat_lightning.training import train
from tests.helpers import warm
from tests.helpers.cli import REPO, compose_config, run_cli


def compose_train(tmp_path: Path, *overrides: str):
    return compose_config("train", tmp_path, *overrides)


def test_defaults_are_valid_and_the_default_model_is_resnet101(tmp_path):
    cfg = compose_train(tmp_path)
    check_train_config(cfg)
    assert cfg.model.depth == 101 and cfg.data.synthetic.num_species == 8


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("model.depth=77", "model.depth=77"),
        ("model.backbone=NoSuchNet", "model.backbone='NoSuchNet': unknown backbone; one of resnet"),
        ("model.optimizer.lr=-0.1", "model.optimizer (torch.optim.SGD): Invalid learning rate"),
        ("model.optimizer.momentum=-1", "model.optimizer"),
        ("model.scheduler.factor=2.0", "model.scheduler"),
        ("model.label_smoothing=1.5", "model.label_smoothing"),
        ("model.weights_path=/nonexistent.pth", "model.weights_path"),
        ("ckpt_path=/nonexistent.ckpt", "ckpt_path"),
        ("monitor=test/acc", "monitor=test/acc: must be val/<metric> or train/<metric>"),
        ("monitor=best/val/acc", "monitor=best/val/acc"),
        ("monitor_mode=up", "monitor_mode='up': must be max or min"),
    ],
)
def test_model_and_run_errors_name_the_key_before_any_work(tmp_path, override, key):
    pattern = "^" + re.escape(key)
    with pytest.raises(ConfigError, match=pattern):
        train(compose_train(tmp_path, override))
    assert not (tmp_path / "data").exists()  # nothing was generated


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.split.ratios=[0.5,0.6,0.1]"], r"data\.split\.ratios=.*sum to 1"),
        (["data=imagefolder", "data.root=/does/not/exist"], r"data\.root="),
        (["data.batch_size=0"], r"data.*batch_size"),
        (["data=imagefolder", "data.root=.", "data.split.near_cosine=1.5"], r"near_cosine=1\.5"),
    ],
)
def test_data_errors_name_the_key_before_any_work(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_train(tmp_path, *overrides))
    assert not (tmp_path / "data").exists()  # nothing was generated


def test_empty_dataset_is_a_config_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no images"):
        train(compose_train(tmp_path, "data=imagefolder", f"data.root={tmp_path / 'empty'}"))


@pytest.mark.slow
def test_cli_reports_config_error_in_one_line_and_exits_2(tmp_path):
    res = run_cli("train.py", "model.depth=77", tmp_path=tmp_path, timeout=120)
    assert res.returncode == 2
    assert "config error: model.depth=77" in res.stderr
    assert "Traceback" not in res.stderr
    unknown = run_cli("train.py", "data.no_such_key=1", tmp_path=tmp_path, timeout=120)
    assert unknown.returncode != 0 and "no_such_key" in unknown.stderr


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("+trainer.max_epoch=3", r"^trainer\.max_epoch: unknown key .*did you mean max_epochs"),
        ("+model.chanels_last=true", r"^model\.chanels_last: unknown key"),
        ("+model.optimizer.moment=0.9", r"^model\.optimizer\.moment: unknown key"),
        ("+data.split.sead=1", r"^data\.split\.sead: unknown key"),
        ("+data.synthetic.num_specie=3", r"^data\.synthetic\.num_specie: unknown key"),
        ("+callbacks.model_checkpoint.top_k=2", r"^callbacks\.model_checkpoint\.top_k: unknown"),
        ("model._target_=no.such.Model", r"^model\._target_=no\.such\.Model: cannot import"),
        ("optimized_metric=val/f1", r"^optimized_metric=val/f1"),
    ],
)
def test_unknown_keys_anywhere_are_refused_before_any_work(tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        train(compose_train(tmp_path, override))
    assert not (tmp_path / "data").exists() and not (tmp_path / "out" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("prior.seed=abc", "prior.seed='abc': must be an integer"),
        ("prior.batch_size=1.5", "prior.batch_size=1.5: must be an integer"),
        ("prior.lr=inf", "prior.lr=inf: must be a finite number > 0"),
        ("prior.lr=0", "prior.lr=0: must be a finite number > 0"),
        ("prior.weight_decay=-1", "prior.weight_decay=-1: must be a finite number >= 0"),
        ("prior.steps=0", "prior.steps=0: must be an integer >= 1"),
        ("prior.hidden=5000", "prior.hidden=5000: must be an integer in [1, 4096]"),
        ("prior.hide_place=1.5", "prior.hide_place=1.5: must be in [0, 1)"),
        ("prior.hide_date=abc", "prior.hide_date='abc': must be a number"),
        ("prior.min_photos=0", "prior.min_photos=0: must be an integer >= 1"),
        ("prior.enabled=maybe", "prior.enabled='maybe': must be true or false"),
        ("prior.seed=null", "prior.seed=None: must be set (not null)"),
        ("prior=5", "prior=5: must be the fit's settings"),
        ("open_set.score=eval", "open_set.score='eval': unknown out-of-set score; one of"),
        ("open_set.accept=abc", "open_set.accept='abc': must be a number"),
        ("open_set.accept=0", "open_set.accept=0: must be in (0, 1]"),
        ("+open_set.sore=energy", "open_set.sore: unknown key; accepted: score, accept"),
        ("open_set=5", "open_set=5: must be a mapping"),
    ],
)
def test_every_prior_and_open_set_setting_is_checked_before_any_work(tmp_path, override, message):
    """The settings used only after training (the place prior's fit, the out-of-set rule): a bad
    one is one line naming its key before any work, never a traceback after the training."""
    with pytest.raises(ConfigError) as e:
        check_train_config(compose_train(tmp_path, override))
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


@pytest.mark.parametrize("preset", ["experiment=finetune", "hparams_search=optuna_sgd"])
def test_presets_keep_keys_strict(tmp_path, preset):
    with pytest.raises(ConfigError, match=r"^trainer\.max_epoch: unknown key"):
        check_train_config(compose_train(tmp_path, preset, "+trainer.max_epoch=3"))


@pytest.mark.parametrize("root", [None, "elsewhere"])
def test_a_clone_script_started_from_another_folder_keeps_data_and_runs_in_the_clone(
    tmp_path, root
):
    """``python <clone>/train.py`` from a home folder (a Slurm submission, say) reads the
    clone's data/ and writes its logs/ there, not beside the user; ``$INAT_LIGHTNING_ROOT``
    still chooses."""
    env = {k: v for k, v in os.environ.items() if k != "INAT_LIGHTNING_ROOT"}
    if root:
        env["INAT_LIGHTNING_ROOT"] = str(tmp_path / root)
    argv = [str(REPO / "train.py"), "--cfg", "job", "--resolve", "-p", "paths"]
    res = warm.run(argv, cwd=tmp_path, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    paths = yaml.safe_load(res.stdout.split("\n", 1)[1])  # after "# @package paths"
    home = tmp_path / root if root else REPO
    assert (paths["root_dir"], paths["data_dir"]) == (str(home), f"{home}/data")
    assert paths["log_dir"] == f"{home}/logs"
    assert clone_root(str(tmp_path / "train.py")) is None  # not a clone's: the current folder
