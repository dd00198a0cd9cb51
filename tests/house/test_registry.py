"""One way to pick an implementation by name (``inat_lightning.registry``): the project's
built-ins, a user's own added by ``register`` or by an installed package's entry points, and
names read from files that can only pick what is installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from inat_lightning.analysis.audit import AUDITS
from inat_lightning.analysis.detect import DETECTORS, build_detector
from inat_lightning.analysis.gradcam import CAM_METHODS, CAM_TARGETS, CamSetting
from inat_lightning.data.manifest import Record, read_manifest, write_manifest
from inat_lightning.models.confusion import PAIR_SCORES
from inat_lightning.models.metric_names import is_optimizable
from inat_lightning.models.metrics import build_metrics
from inat_lightning.models.open_set import OPEN_SET_SCORES, OpenSetRule, open_set_score
from inat_lightning.registry import Registry
from tests.helpers import own_plugins
from tests.helpers.cli import REPO, cli_argv
from tests.helpers.data import make_image_folder

#: every registry a user extends, and its entry point group
REGISTRIES = {
    "cam_methods": CAM_METHODS,
    "cam_targets": CAM_TARGETS,
    "detectors": DETECTORS,
    "open_set_scores": OPEN_SET_SCORES,
    "pair_scores": PAIR_SCORES,
    "audits": AUDITS,
}


@pytest.fixture
def restored():
    """Whatever a test registers is gone afterwards."""
    saved = {r: dict(r._entries_with_builtins()) for r in REGISTRIES.values()}
    yield
    for r, entries in saved.items():
        r._entries = entries


def install(site: Path, entries: dict[str, dict[str, str]]) -> Path:
    """A package's dist-info under ``site`` declaring ``entries`` (group suffix → name → object
    reference), as ``pip install`` of a user's package would leave it."""
    info = site / "own_choices-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: own-choices\nVersion: 1.0\n")
    lines = []
    for group, named in entries.items():
        lines += [f"[inat_lightning.{group}]", *(f"{n} = {ref}" for n, ref in named.items()), ""]
    (info / "entry_points.txt").write_text("\n".join(lines))
    return site


def test_an_unknown_name_is_one_line_naming_the_key_and_the_choices():
    things = Registry("thing", "x.thing", "test_things")
    things.register("a", 1)
    things.register("b")(2)
    assert things.get("b") == 2 and things.names() == ("a", "b") and "a" in things
    with pytest.raises(ValueError, match=r"^x\.thing='c': unknown thing; one of a, b$"):
        things.get("c")
    with pytest.raises(ValueError, match=r"^y='c'"):
        things.check("c", "y")
    with pytest.raises(ValueError, match=r"^x\.thing=3: one of a, b$"):
        things.get(3)
    assert "c" not in things


def test_a_taken_name_is_refused_so_a_plugin_cannot_replace_a_built_in():
    with pytest.raises(ValueError, match="CAM method 'GradCAM' is already registered"):
        CAM_METHODS.register("GradCAM", own_plugins.MarkedGradCAM)
    CAM_METHODS.register("GradCAM", CAM_METHODS.get("GradCAM"))  # the same object: a no-op
    assert CAM_METHODS.get("GradCAM").__name__ == "GradCAM"


def test_the_built_ins_are_every_pytorch_grad_cam_method_and_the_project_s_choices():
    assert {"GradCAM", "GradCAMPlusPlus", "EigenCAM", "ScoreCAM", "LayerCAM"} <= set(CAM_METHODS)
    assert "AblationLayer" not in CAM_METHODS  # a helper of the package, not a CAM method
    assert CAM_TARGETS.names()[:2] == ("class", "finer")
    assert DETECTORS.names()[:2] == ("opencv", "torchvision")
    assert OPEN_SET_SCORES.names()[:2] == ("max_softmax", "energy")
    assert AUDITS.names()[:2] == ("cue", "faithfulness")
    with pytest.raises(ValueError, match=r"^method='Nope': unknown CAM method; one of .*GradCAM"):
        CamSetting(method="Nope")
    with pytest.raises(ValueError, match=r"^score='finest': unknown CAM target; one of class"):
        CamSetting(score="finest")


def test_an_installed_package_adds_a_choice_by_entry_point_read_on_first_lookup(
    tmp_path, monkeypatch
):
    refs = {"plugged": "tests.helpers.own_plugins:balanced_error", "broken": "no_such_mod:x"}
    monkeypatch.syspath_prepend(str(install(tmp_path, {"test_plugged": refs})))
    things = Registry("thing", "x.thing", "test_plugged")
    things.register("a", 1)
    assert things.get("a") == 1 and things._found_plugins is None  # a known name reads none
    assert things.get("plugged") is own_plugins.balanced_error
    assert things.names() == ("a", "plugged", "broken")  # listed; a broken one is not loaded
    # a plugin that cannot load fails the command that picks it, naming its entry point
    with pytest.raises(ValueError, match=r"^x.thing='broken': the inat_lightning.test_plugged "):
        things.get("broken")


def test_a_name_read_from_a_file_picks_only_what_is_installed_and_imports_nothing(
    tmp_path, monkeypatch
):
    # a module on the path that leaves a mark when imported: a file naming it must not import it
    marker = tmp_path / "imported"
    (tmp_path / "trap_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\nscore = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    rule = {"score": "trap_mod:score", "threshold": 0.5, "accept": 0.95}
    with pytest.raises(ValueError, match=r"^ckpt: not an out-of-set rule: score='trap_mod:score'"):
        OpenSetRule.from_dict(rule, "ckpt")
    for registry in REGISTRIES.values():
        assert "trap_mod:score" not in registry and "trap_mod.score" not in registry
    assert not marker.exists()


def test_a_registered_out_of_set_score_fits_reads_back_and_keeps_its_range(restored):
    logits = np.array([[4.0, 1.0, 0.0], [1.0, 0.5, 0.0], [2.0, 2.0, 0.0]], np.float32)
    with pytest.raises(ValueError, match=r"^score='margin': unknown out-of-set score"):
        open_set_score(logits, 1.0, "margin")
    OPEN_SET_SCORES.register("margin", own_plugins.MARGIN)
    assert open_set_score(logits, 2.0, "margin") == pytest.approx([1.5, 0.25, 0.0])
    rule = OpenSetRule.fit(logits, 1.0, "margin", accept=1.0)
    assert rule.threshold == pytest.approx(0.0)
    assert OpenSetRule.from_dict(rule.to_dict(), "ckpt") == rule
    below = {**rule.to_dict(), "threshold": -1.0}  # outside the score's range: refused
    with pytest.raises(ValueError, match=r"threshold=-1.0: must be finite, in \[0.0, inf\]"):
        OpenSetRule.from_dict(below, "ckpt")


def test_a_registered_macro_metric_is_logged_and_may_be_monitored(restored):
    assert not is_optimizable("val/balanced_error")
    PAIR_SCORES.register("balanced_error", own_plugins.balanced_error)
    assert is_optimizable("val/balanced_error") and is_optimizable("best/test/balanced_error")
    metrics = build_metrics(3)
    assert "balanced_error" in metrics
    # class 0: 2 of 2 right, class 1: 1 of 3, class 2: 0 of 1 -> mean recall 4/9
    target = torch.tensor([0, 0, 1, 1, 1, 2])
    pred = torch.tensor([0, 0, 1, 0, 2, 0])
    metrics.update(torch.nn.functional.one_hot(pred, 3).float(), target)
    found = metrics.compute()
    assert float(found["balanced_error"]) == pytest.approx(1 - 4 / 9)
    assert float(found["recall_macro"]) == pytest.approx(4 / 9)
    PAIR_SCORES.register("top3", own_plugins.balanced_error)
    with pytest.raises(ValueError, match="macro metric 'top3': the name of a built-in metric"):
        build_metrics(3)


def test_a_registered_detector_gets_only_the_options_it_takes(restored):
    DETECTORS.register("corner", own_plugins.CornerDetector)
    detector = build_detector("corner", labels=("person",), image_size=800, weights_path=None)
    (hit,) = detector(Image.new("RGB", (80, 40)))
    assert hit.label == "corner" and hit.box == (0.0, 0.0, 20.0, 10.0)
    with pytest.raises(ValueError, match=r"^--detector='nope': unknown cue detector"):
        build_detector("nope")


def test_an_installed_package_s_cam_method_and_detector_drive_the_real_commands(
    short_training, tmp_path
):
    """A user's package, installed (its dist-info on the path), adds a CAM method and a cue
    detector; ``predict.py`` and ``cues detect`` use them by name, no project file edited."""
    site = install(
        tmp_path / "site",
        {
            "cam_methods": {"MarkedGradCAM": "tests.helpers.own_plugins:MarkedGradCAM"},
            "detectors": {"corner": "tests.helpers.own_plugins:CornerDetector"},
        },
    )
    mark = tmp_path / "cam_built"
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{REPO}", "OWN_PLUGIN_MARK": str(mark)}
    run, _ = short_training
    best = json.loads((run / "metrics.json").read_text())["best_checkpoint"]
    photos = make_image_folder(tmp_path / "photos", {"a": 2})
    argv = cli_argv(
        "predict.py",
        (f"ckpt_path={best}", f"inputs={photos}", "cam.method=MarkedGradCAM"),
        tmp_path,
        None,
    )
    res = subprocess.run(
        [sys.executable, *map(str, argv)], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert mark.read_text().count("built") >= 1  # the plugin made the explanations
    assert list((tmp_path / "logs").rglob("explanations/*.png"))

    root = tmp_path / "tree"
    (root / "x").mkdir(parents=True)
    Image.new("RGB", (80, 40), (50, 90, 120)).save(root / "x" / "a.jpg")
    write_manifest(
        root / "manifest.csv", [Record("a", "a", "1", "x", "x/a.jpg", width=80, height=40)]
    )

    def detect(name: str) -> subprocess.CompletedProcess:
        argv = ["-m", "inat_lightning.cues", "detect", str(root), "--detector", name]
        return subprocess.run(
            [sys.executable, *argv], cwd=REPO, env=env, capture_output=True, text=True
        )

    res = detect("corner")
    assert res.returncode == 0, res.stderr[-3000:]
    (row,) = read_manifest(root / "manifest.csv")
    assert row.cue_source == "corner-detector" and row.cue_label == "corner"
    res = detect("nope")
    assert res.returncode == 2
    want = "--detector='nope': unknown cue detector; one of opencv, torchvision, corner"
    assert want in res.stderr
