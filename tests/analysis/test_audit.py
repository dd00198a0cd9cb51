"""The bias audit flags a model trained with a spurious cue, and not one trained without it.

The setting is the strongest form of the "fisherman" problem: two cryptic species (drawn
identically; only context can tell them apart) and a hand that comes with every photo of one of
them. Both models are audited on the same cued test photos."""

import json
from pathlib import Path

import numpy as np
import pytest

from inat_lightning.analysis.audit import AuditConfig, flip_rate, lookalike, verdict
from inat_lightning.analysis.report import audit_findings
from inat_lightning.analysis.results import CueAuditRow
from inat_lightning.config import ConfigError, build
from inat_lightning.evaluation import evaluate
from inat_lightning.training import train
from tests.helpers.cli import compose_config, run_cli, run_dirs
from tests.helpers.data import make_cued_photos

DATA = [
    "data.synthetic.num_species=2",
    "data.synthetic.cryptic=true",
    "data.synthetic.observations_per_species=120",
    "data.synthetic.image_size=48",
    "data.synthetic.cue_share=1.0",
    "data.synthetic.cue_other_share=0.0",
    "data.image_size=48",
    "data.crop_ratio=1.0",  # keep the corners, where the hand is
    "data.num_workers=0",
]
TRAIN = [
    "model=resnet18",
    "data.batch_size=16",
    "trainer.max_epochs=6",
    "model.optimizer.lr=0.02",
    "callbacks=[model_checkpoint]",
    "data.crop_scale=[0.9,1.0]",
    "+trainer.enable_progress_bar=false",
]


def best_of(run: Path) -> Path:
    """The run's best checkpoint (highest validation macro-F1; ``save_top_k=1``)."""
    (best,) = (run / "checkpoints").glob("epoch*.ckpt")
    return best


@pytest.mark.parametrize(
    ("key", "value", "node"),
    [
        ("cam.score", "nosuch", "cam"),
        ("cam.method", "Nope", "cam"),
        ("audit.removal", "smudge", "audit"),
    ],
)
def test_a_bad_audit_setting_is_a_config_error_naming_its_key(tmp_path, key, value, node):
    cfg = compose_config("evaluate", tmp_path, "ckpt_path=x.ckpt", f"{key}={value}")
    with pytest.raises(ConfigError, match=rf"^{key}='{value}': (unknown .*; )?one of"):
        build(cfg[node], node)


def test_the_all_row_pools_every_cue_class_flips():
    flips = {0: [1, 1, 0, 1], 3: [0, -1]}
    assert flip_rate(flips, 0) == 0.75 and flip_rate(flips, 3) == -0.5
    assert flip_rate(flips, None) == pytest.approx(2 / 6)  # (all): 6 pasted photos, net 2 pulled
    assert flip_rate(flips, 5) == 0.0 and flip_rate({}, None) == 0.0


@pytest.mark.parametrize(
    ("drop", "flip", "twin", "lift", "said"),
    [
        # issue 36's digit scans: removal 0.7 -> 0.0 (control 0.7), every twin flipped, lift 1.39
        (0.7, 1.0, "Digit 1", 1.39, "RELIES ON THE CUE — and the CAM does not show it"),
        (0.7, 0.0, "Digit 1", 2.0, "RELIES ON THE CUE"),  # removal alone is evidence
        (0.0, 0.6, "Digit 1", 2.0, "RELIES ON THE CUE"),  # so is the transplant alone
        (0.1, 0.6, "", 1.0, "ignores the cue"),  # no look-alike: no transplant was measured
        (0.1, 0.4, "Digit 1", 2.0, "ignores the cue — though the CAM points at it"),
        (0.1, 0.4, "Digit 1", 1.0, "ignores the cue"),
    ],
)
def test_the_verdict_follows_the_counterfactuals_and_says_the_cam_beside_it(
    drop, flip, twin, lift, said
):
    row = CueAuditRow(
        "Digit 7", 20, 0.2 * lift, 0.2, lift, 0.7, 0.7 - drop, 0.7, drop, 0.3, twin, flip
    )
    assert verdict(row, AuditConfig()) == said
    assert verdict(CueAuditRow(**{**row.__dict__, "cued_images": 4}), AuditConfig()).startswith(
        "too few"
    )


def test_the_lookalike_is_what_the_photos_become_without_their_cue():
    assert lookalike(np.array([0, 1, 1, 2, 1, 0]), 0) == 1
    assert lookalike(np.array([0, 0]), 0) is None  # the cue was not needed


def test_findings_name_each_judged_class_with_its_verdict_and_numbers():
    row = {"cued_images": 9, "acc_drop": 0.8, "energy_lift": 2.04}
    audit = {
        "kind": "cue",
        "min_images": 5,
        "rows": [
            {**row, "class": "Piscis striatus", "verdict": "RELIES ON THE CUE"},
            {**row, "class": "Avis", "cued_images": 2, "verdict": "too few cued images (< 5)"},
            {**row, "class": "(all)", "verdict": ""},
        ],
    }
    assert audit_findings(audit) == [
        "Piscis striatus: RELIES ON THE CUE (accuracy drop beyond the hole control +0.80, "
        "CAM energy in the cue box 2.0x its area)"
    ]
    audit["rows"][0] |= {"lookalike": "Piscis punctatus", "flip_rate_lookalike": 0.909}
    assert audit_findings(audit)[0].endswith(
        "2.0x its area; the cue pasted onto Piscis punctatus photos: +91% taken for it)"
    )
    assert audit_findings({**audit, "kind": "faithfulness"}) == []


@pytest.mark.slow
def test_audit_flags_the_biased_model_only(tmp_path):
    """The margins, measured over seeds 0-5 (6 epochs, both scores): the biased model's accuracy
    drop 0.91-1.00 (asserted >= 0.15), energy lift 4.0-6.8 (>= 1.5), the hand's flip rate
    0.95-1.00 (> 0.5); the clean model's drop -0.02-0.04 (< 0.15), flip rate <= 0.03 (< 0.5),
    lift 0.4-2.3, below the biased one's on every seed. One seed runs here."""
    seed = 0
    audits = {}
    for name, data in (("biased", "data=synthetic_biased"), ("clean", "data=synthetic")):
        out = tmp_path / name
        train(compose_config("train", tmp_path, data, *DATA, *TRAIN, f"seed={seed}", out=out))
        for score in ("class", "finer"):  # the class score, and against the look-alike twin
            cfg = compose_config(
                "evaluate",
                tmp_path,
                f"ckpt_path={best_of(out)}",
                "restore_data=false",
                "data=synthetic_biased",
                *DATA,
                "callbacks=none",
                "cam.target_layer=layer2",
                f"cam.score={score}",
                "+trainer.enable_progress_bar=false",
                out=tmp_path / f"eval_{name}_{score}",
            )
            summary = evaluate(cfg)
            assert summary["audit"]["kind"] == "cue"
            audits[name, score] = {r["class"]: r for r in summary["audit"]["rows"]}
            assert (tmp_path / f"eval_{name}_{score}" / "bias_audit.csv").is_file()

    for score in ("class", "finer"):
        biased = audits["biased", score]["Piscis striatus"]
        clean = audits["clean", score]["Piscis striatus"]
        assert biased["cued_images"] == clean["cued_images"] >= 20  # the same audited photos
        assert biased["verdict"] == "RELIES ON THE CUE", (score, biased)
        assert biased["energy_lift"] >= 1.5 and biased["acc_drop"] >= 0.15
        assert clean["verdict"] != "RELIES ON THE CUE", (score, clean)
        assert clean["acc_drop"] < 0.15 and clean["energy_lift"] < biased["energy_lift"]
        # adding the hand to the twin species' photos pulls the biased model, not the clean one
        assert biased["flip_rate_cue_added"] > 0.5 > clean["flip_rate_cue_added"]
        # without the hand, the biased model takes P. striatus for its twin (the only other
        # species here, so the twin's flip rate is the flip rate)
        assert biased["lookalike"] == "Piscis punctatus"
        assert biased["flip_rate_lookalike"] == biased["flip_rate_cue_added"]


@pytest.mark.slow
def test_on_real_photos_the_cli_flags_a_model_that_only_sees_a_pasted_cue(tmp_path):
    """Real photos (scikit-learn's bundled ones, not drawn by this project): the cue is removed
    by inpainting, not redrawn, and the verdict is measured against the hole control."""
    found = {}
    for name, cue in (("biased", True), ("control", False)):
        root = make_cued_photos(tmp_path / f"{name}_photos", cue=cue)
        logs = tmp_path / name
        res = run_cli(
            "train.py",
            "data=imagefolder",
            f"data.root={root}",
            "model=resnet18",
            "data.image_size=64",
            "data.crop_ratio=1.0",
            "data.crop_scale=[0.9,1.0]",
            "data.num_workers=0",
            "data.batch_size=16",
            "trainer.max_epochs=6",
            "model.optimizer.lr=0.02",
            "callbacks=[model_checkpoint]",
            "seed=0",
            tmp_path=logs,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        (run,) = run_dirs(logs / "logs")
        res = run_cli(
            "evaluate.py",
            f"ckpt_path={best_of(run)}",
            "callbacks=none",
            "cam.target_layer=layer2",
            tmp_path=logs / "eval",
        )
        assert res.returncode == 0, res.stderr[-3000:]
        (out,) = run_dirs(logs / "eval" / "logs")
        summary = json.loads((out / "metrics.json").read_text())
        assert summary["audit"]["kind"] == "cue"
        found[name] = {r["class"]: r for r in summary["audit"]["rows"]}["Cue fish"]
        found[name]["report"] = (out / "report.md").read_text()
        found[name]["gallery"] = summary["audit"]["gallery"]

    biased, control = found["biased"], found["control"]
    # no generator here: photo-based counterfactuals only
    assert not [k for k in biased if k.endswith("_redrawn")], biased
    assert biased["verdict"] == "RELIES ON THE CUE", biased
    assert biased["acc_drop"] >= 0.5 and biased["acc_hole_control"] >= 0.8 * biased["acc_with_cue"]
    assert biased["flip_rate_cue_added"] > 0.5
    assert control["verdict"] != "RELIES ON THE CUE", control
    assert abs(control["acc_drop"]) < 0.15
    assert (
        "acc_hole_control" in biased["report"]
        and "![the photos that depend most" in biased["report"]
    )
    # the report opens with what it found: the data's cue share, and the verdict
    assert "## Findings" in biased["report"] and "## Findings" in control["report"]
    assert "Bias audit: **Cue fish: RELIES ON THE CUE" in biased["report"]
    assert "Bias audit: **Cue fish: RELIES" not in control["report"]
    assert biased["gallery"] == "audit_gallery.png"
