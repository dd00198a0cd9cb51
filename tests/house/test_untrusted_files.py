"""Files a user is told to pass around (.pth, .ckpt, run folders) are data, never code: a crafted
one is refused without running anything, a genuine one still loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import yaml

from inat_lightning.config import ConfigError
from inat_lightning.data.geo import Place
from inat_lightning.evaluation import evaluate
from inat_lightning.models.backbones import resnet
from inat_lightning.models.checkpoint import load_classifier, read_checkpoint
from inat_lightning.models.classifier import Classifier
from inat_lightning.models.open_set import OpenSetRule
from inat_lightning.models.prior import PriorFit
from inat_lightning.runs.resume import resume_argv
from tests.helpers.cli import REPO, compose_config


class Payload:
    """Unpickling this creates a marker file: the side effect a crafted file would have."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def crafted(path: Path, marker: Path, wrap: bool) -> Path:
    obj = (
        {"state_dict": {"x": Payload(marker)}, "hyper_parameters": {}} if wrap else Payload(marker)
    )
    torch.save(obj, path)  # a real torch zip file, with a pickled callable inside
    return path


def small_checkpoint(path: Path, **hparams) -> Path:
    hparams = {"input_spec": {"image_size": 32}, **hparams}
    model = Classifier(num_classes=3, depth=18, class_names=["a", "b", "c"], **hparams)
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    return path


def test_a_crafted_weight_file_runs_nothing_and_a_genuine_one_loads(tmp_path):
    marker = tmp_path / "pwned"
    evil = crafted(tmp_path / "evil.pth", marker, wrap=False)
    with pytest.raises(ValueError, match=r"weights_path=.*refused"):
        resnet(18, 3, weights_path=evil)
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the control: an unsafe load does run it
    assert marker.exists()
    torch.save(resnet(18, 3).state_dict(), tmp_path / "good.pth")
    net = resnet(18, 3, weights_path=tmp_path / "good.pth")
    assert net.fc.out_features == 3


def test_a_crafted_checkpoint_runs_nothing_and_is_a_config_error(tmp_path):
    marker = tmp_path / "pwned"
    evil = crafted(tmp_path / "evil.ckpt", marker, wrap=True)
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*evil\.ckpt.*refused"):
        load_classifier(evil)
    assert not marker.exists()


def test_truncated_and_foreign_checkpoints_are_config_errors(tmp_path):
    good = small_checkpoint(tmp_path / "good.ckpt")
    (tmp_path / "cut.ckpt").write_bytes(good.read_bytes()[:5000])
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*cut\.ckpt.*not readable as tensors"):
        read_checkpoint(tmp_path / "cut.ckpt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*not a checkpoint of this project"):
        read_checkpoint(tmp_path / "other.ckpt")


@pytest.mark.parametrize(
    "spec",
    [
        {"image_size": "32"},
        {"image_size": 32, "crop_ratio": 7},
        {"image_size": 32, "mean": [0, 0]},
        {"image_size": 32, "std": [0, 1, 1]},
        {"image_size": 32, "channels": "BGR"},
        {"image_size": 32, "_target_": "os.system"},
        ["image_size", 32],
    ],
)
def test_a_checkpoint_with_a_bad_input_spec_is_a_config_error(tmp_path, spec):
    good = torch.load(small_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    good["hyper_parameters"]["input_spec"] = spec
    torch.save(good, tmp_path / "bad.ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*bad\.ckpt.*input_spec"):
        load_classifier(tmp_path / "bad.ckpt")


@pytest.mark.parametrize(
    "extra, key",
    [
        ({"prior": {"version": 1, "hidden": 4, "state": {}, "log_freq": [0.0, 0.0, 0.0]}}, "prior"),
        ({"prior": {"version": 2}}, "prior"),
        ({"prior": "os.system('x')"}, "prior"),
        ({"open_set": {"score": "eval", "threshold": 0.5, "accept": 0.95}}, "open_set"),
        ({"open_set": {"score": "energy", "threshold": float("nan"), "accept": 0.95}}, "open_set"),
        ({"open_set": {"score": "energy", "threshold": 0.1, "accept": 0.9, "x": 1}}, "open_set"),
    ],
)
def test_a_checkpoint_with_a_bad_prior_or_open_set_rule_is_a_config_error(tmp_path, extra, key):
    good = torch.load(small_checkpoint(tmp_path / "good.ckpt"), weights_only=True)
    torch.save({**good, **extra}, tmp_path / "bad.ckpt")
    with pytest.raises(ConfigError, match=rf"^ckpt_path=.*bad\.ckpt.*{key}"):
        load_classifier(tmp_path / "bad.ckpt")


@pytest.fixture(scope="module")
def genuine(tmp_path_factory) -> Path:
    """A small checkpoint with everything training stores: lineages, a data fingerprint, a
    temperature, a fitted place prior, an out-of-set rule and test results."""
    path = tmp_path_factory.mktemp("genuine") / "genuine.ckpt"
    lineages = {"a": {"genus": "A", "family": "F"}, "b": {"genus": "B", "family": "F"}}
    fingerprint = {"images": 30, "train_images": {"a": 10}, "licences": {"cc-by": 30}}
    small_checkpoint(path, lineages=lineages, data_fingerprint=fingerprint)
    places = [Place(float(i % 60), float(i % 90), 1 + i % 365) for i in range(30)]
    prior = PriorFit(steps=10, min_photos=1).fit(places, [i % 3 for i in range(30)], 3)
    checkpoint = torch.load(path, weights_only=True) | {
        "temperature": 1.5,
        "prior": prior.to_dict(),
        "open_set": OpenSetRule("max_softmax", 0.5, 0.95).to_dict(),
        "results": {"metrics": {"test/acc": 0.5}, "calibration": None, "overrides": ["seed=1"]},
    }
    torch.save(checkpoint, path)
    return path


def test_a_genuine_checkpoint_with_everything_training_stores_loads(genuine):
    model = load_classifier(genuine)
    assert model.temperature == 1.5 and model.open_set == OpenSetRule("max_softmax", 0.5, 0.95)
    assert model.prior is not None and model.taxonomy is not None


@pytest.mark.parametrize(
    "where, value, message",
    [
        (("prior", "state", "4.weight"), torch.full((3, 64), 3e38), r"prior: .* beyond ±10000"),
        (("prior", "log_freq"), torch.full((3,), 5.0), r"prior: .*log-frequencies above 0"),
        (("prior", "evil"), 1, r"prior: place prior keys \['evil'\] unknown"),
        (("prior", "state", 5), torch.zeros(1), r"prior: place prior state: 5 is not a tensor"),
        (("prior", "photos"), -1, r"prior: place prior photos=-1"),
        (("temperature",), 1e-30, r"temperature=1e-30: must be a number in \[0\.05, 20\.0\]"),
        (("temperature",), 1e3, r"temperature=1000\.0: must be"),
        (("open_set", "threshold"), 5.0, r"open_set: .*threshold=5\.0: must be finite, in \[0"),
        (("hyper_parameters", "class_names"), ["a", "a", "c"], r"class_names: 'a' appears twice"),
        (("hyper_parameters", "class_names"), ["a", "", "c"], r"class_names: must be a list"),
        (("hyper_parameters", "class_names"), ["a", "b"], r"class_names: 2 names for 3 classes"),
        (("hyper_parameters", "lineages", "zz"), {"genus": "Z"}, r"lineages: 'zz' is not one of"),
        (("hyper_parameters", "lineages", "a"), {"tribe": "A"}, r"lineages: 'a': must map ranks"),
        (("hyper_parameters", 7), 1, r"hyper_parameters: not a mapping of names"),
        (("state_dict", 5), torch.zeros(1), r"state_dict: 5 is not a tensor under a text name"),
        (("state_dict", "net.fc.weight"), torch.zeros(4, 512), r"state_dict: net\.fc\.weight"),
        (("scheduler_stepped_epoch",), "abc", r"scheduler_stepped_epoch='abc'"),
        (("results", "metrics", "test/acc"), "high", r"results\.metrics: must map names to"),
        (("hyper_parameters", "data_fingerprint", "licences"), ["cc-by"], r"data_fingerprint\."),
    ],
)
def test_a_tampered_checkpoint_is_refused_in_one_line_before_any_photo(
    genuine, tmp_path, where, value, message
):
    """Item by item, a value this project stores edited in a genuine checkpoint: refused when
    the file is read (resume, ``ckpt_path``) or loaded (evaluate, predict), naming the part."""
    checkpoint = torch.load(genuine, weights_only=True)
    *parents, last = where
    node = checkpoint
    for part in parents:
        node = node[part]
    node[last] = value
    torch.save(checkpoint, tmp_path / "bad.ckpt")
    for read in (read_checkpoint, load_classifier):
        with pytest.raises(ConfigError, match=rf"^ckpt_path=.*bad\.ckpt': {message}") as e:
            read(tmp_path / "bad.ckpt")
        assert "\n" not in str(e.value)


def test_a_checkpoint_loads_without_the_weights_it_was_started_from(tmp_path):
    start = tmp_path / "start.pth"
    torch.save(resnet(18, 3).state_dict(), start)
    ckpt = small_checkpoint(tmp_path / "tuned.ckpt", weights_path=str(start))
    start.unlink()  # another machine: the .pth the fine-tune started from is not there
    model = load_classifier(ckpt)
    assert model.class_names == ["a", "b", "c"] and model.hparams.weights_path is None


def test_a_run_folder_that_would_build_other_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    ckpt = small_checkpoint(run / "checkpoints" / "best.ckpt")
    evil_data = {"_target_": "pathlib.Path.touch", "self": str(marker)}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"data": evil_data}))
    cfg = compose_config("evaluate", tmp_path, f"ckpt_path={ckpt}")
    with pytest.raises(ConfigError, match=r"would build pathlib\.Path\.touch"):
        evaluate(cfg)
    assert not marker.exists()
    # and resume=<run dir> refuses saved overrides that choose code
    (run / ".hydra" / "overrides.yaml").write_text(
        yaml.safe_dump(["model=resnet18", "+model.net._target_=pathlib.Path.touch"])
    )
    with pytest.raises(ConfigError, match=r"resume=.*_target_"):
        resume_argv(["train.py", f"resume={run}"])


def test_a_run_folder_may_build_the_data_module_of_the_users_own_command(tmp_path):
    """A run folder naming a user's own data module (their package, ``data._target_``) is
    rebuilt only when this command names that class too: the folder chooses no code."""
    marker = tmp_path / "built"
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    ckpt = small_checkpoint(run / "checkpoints" / "best.ckpt")
    own = "tests.helpers.own_data.OwnData"
    saved = {"_target_": own, "root": str(tmp_path / "nowhere"), "built_marker": str(marker)}
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"data": saved}))
    with pytest.raises(ConfigError, match=rf"would build {re.escape(own)}"):
        evaluate(compose_config("evaluate", tmp_path, f"ckpt_path={ckpt}"))
    assert not marker.exists()
    with pytest.raises(ConfigError, match=r"^data\.root=.*nowhere': no such directory") as e:
        evaluate(compose_config("evaluate", tmp_path, f"ckpt_path={ckpt}", f"data._target_={own}"))
    assert marker.exists() and "would build" not in str(e.value)


def test_a_data_module_without_the_contract_is_one_line_naming_what_it_lacks():
    from inat_lightning.data.protocol import check_data_module
    from tests.helpers.own_data import NotData, OwnData

    with pytest.raises(
        ValueError,
        match=r"^data: NotData is not a classifier data module: "
        r"it lacks class_names, lineages, .*near_duplicate_summary \(see ",
    ):
        check_data_module(NotData())
    assert isinstance(check_data_module(OwnData(REPO / "tests")), OwnData)


@pytest.mark.parametrize(
    "saved",
    [
        "experiment=../../logs/train/runs/x/pwn",  # a config of the attacker's, by path
        "+experiment=../pwn",
        "model=/tmp/pwn",
        "data=nosuch",  # not an option of the project
        "callbacks=[model_checkpoint,../../pwn]",
        "nosuchgroup/sub=x",
    ],
)
def test_a_run_folder_may_choose_only_the_projects_own_config_options(tmp_path, saved):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (tmp_path / "pwn.yaml").write_text("foo: {_target_: builtins.open, file: /tmp/x, mode: w}\n")
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model=resnet18", saved]))
    with pytest.raises(ConfigError, match=r"^resume=.*sets .*project's conf/"):
        resume_argv(["train.py", f"resume={run}"])


def test_a_run_folder_with_the_projects_own_choices_resumes(tmp_path):
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    saved = [
        "model=resnet18",
        "experiment=demo",
        "callbacks=[model_checkpoint]",
        "~logger",
        "scrape/backend=api",
        "model.optimizer.lr=0.1",
        "data.split.seed=3",
    ]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(saved))
    argv = resume_argv(["train.py", f"resume={run}"])
    assert argv[1 : 1 + len(saved)] == saved


@pytest.mark.parametrize(
    "flag", [["--config-dir", "{lab}"], ["--config-dir={lab}"], ["-cd", "{lab}"]]
)
def test_a_run_folder_may_choose_the_options_of_the_config_dir_given_on_the_command_line(
    tmp_path, flag
):
    """A lab's run (``--config-dir conf data=my_birds``) resumes when the resuming command gives
    the same ``--config-dir``; without it, or with an option the folder does not hold, it is
    refused: the user's own command line decides which config folders count."""
    lab = tmp_path / "lab" / "conf"
    (lab / "data").mkdir(parents=True)
    (lab / "data" / "my_birds.yaml").write_text("defaults: [imagefolder, _self_]\n")
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["data=my_birds"]))
    given = [f.format(lab=lab) for f in flag]
    argv = resume_argv(["train.py", *given, f"resume={run}"])
    assert argv[1] == "data=my_birds" and all(g in argv for g in given)
    with pytest.raises(ConfigError, match=r"sets 'data=my_birds'.*--config-dir given"):
        resume_argv(["train.py", f"resume={run}"])
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["data=other"]))
    with pytest.raises(ConfigError, match=r"sets 'data=other'"):
        resume_argv(["train.py", *given, f"resume={run}"])


@pytest.mark.parametrize(
    "saved",
    [
        # Python's logging config builds the class a handler names, with its arguments
        "+hydra.job_logging.handlers.x={class:subprocess.Popen,args:[[touch,MARKER]]}",
        "hydra.searchpath=[file:///tmp/attacker]",  # YAML of anyone's, as options of any group
        "hydra.callbacks.x.when=now",
        "hydra/job_logging=disabled",
    ],
)
def test_a_run_folder_sets_no_hydra_setting_which_could_choose_code(tmp_path, saved):
    """Hydra keeps its own overrides out of ``overrides.yaml``: a saved one is refused, before
    Hydra composes anything (so no logging handler it names is ever built)."""
    marker = tmp_path / "pwned"
    run = tmp_path / "run"
    (run / ".hydra").mkdir(parents=True)
    line = saved.replace("MARKER", str(marker))
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["model=resnet18", line]))
    with pytest.raises(ConfigError, match=r"^resume=.*not which code to build"):
        resume_argv(["train.py", f"resume={run}"])
    assert not marker.exists()
