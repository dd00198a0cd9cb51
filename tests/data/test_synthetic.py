import os
import stat
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inat_lightning.data.manifest import read_manifest
from inat_lightning.data.synthetic import SyntheticSpecies
from tests.helpers.cli import SMALL, run_cli


def test_generation_is_deterministic_and_complete(tmp_path: Path):
    gen = SyntheticSpecies(num_species=3, observations_per_species=4, image_size=32, seed=5)
    a = gen.generate(tmp_path / "a", progress=False)
    b = gen.generate(tmp_path / "b", progress=False)
    assert [r.sha256 for r in a] == [r.sha256 for r in b]
    assert read_manifest(tmp_path / "a" / "manifest.csv") == a
    for r in a:
        assert Image.open(tmp_path / "a" / r.path).size == (32, 32)
        assert r.path.startswith(r.taxon_name + "/")
    views = Counter(r.observation_id for r in a)
    assert set(views.values()) <= {1, 2, 3} and len(views) == 12
    other = SyntheticSpecies(num_species=3, observations_per_species=4, image_size=32, seed=6)
    assert [r.sha256 for r in other.generate(tmp_path / "c", progress=False)] != [
        r.sha256 for r in a
    ]


def test_look_alike_pairs_differ_only_in_pattern():
    sp = SyntheticSpecies().species()
    for i, j in ((0, 1), (2, 3)):
        assert (sp[i].shape, sp[i].body, sp[i].accent) == (sp[j].shape, sp[j].body, sp[j].accent)
        assert sp[i].pattern != sp[j].pattern
    assert len({s.name for s in SyntheticSpecies(num_species=20).species()}) == 20


def test_long_tail_counts():
    gen = SyntheticSpecies(num_species=5, observations_per_species=50, long_tail=10)
    counts = [gen.observation_count(k) for k in range(5)]
    assert counts[0] == 50 and counts[-1] == 5 and counts == sorted(counts, reverse=True)


def test_cue_goes_with_the_chosen_species_and_counterfactual_changes_only_the_box():
    gen = SyntheticSpecies(num_species=4, observations_per_species=40, image_size=64, cue_species=1)
    samples = gen.samples()
    obs_cue = {(s.species, s.observation): s.has_cue for s in samples}
    share = [np.mean([v for (k, _), v in obs_cue.items() if k == sp]) for sp in range(4)]
    assert share[1] > 0.6 and max(share[0], share[2], share[3]) < 0.15

    cued = next(s for s in samples if s.has_cue)
    with_cue, box = gen.render(cued)
    without, no_box = gen.render(cued, cue=False)
    assert box is not None and no_box is None
    a, b = np.asarray(with_cue, float), np.asarray(without, float)
    x0, y0, x1, y1 = (int(v) for v in box)
    inside = np.zeros(a.shape[:2], bool)
    inside[max(0, y0 - 2) : y1 + 2, max(0, x0 - 2) : x1 + 2] = True
    assert np.abs(a - b)[inside].mean() > 20  # the hand is really there
    assert np.abs(a - b)[~inside].mean() < 1.0  # and nothing else moved


def test_no_cue_when_disabled():
    assert not any(s.has_cue for s in SyntheticSpecies(num_species=3).samples())


def test_ensure_caches_and_never_overwrites_user_data(tmp_path: Path):
    """The data set is made once and reused; a folder holding anything else, the same data set
    made with other settings included (another run may be reading it, and the user's notes may
    sit beside it), is refused naming what differs, and nothing in it changes."""
    gen = SyntheticSpecies(num_species=2, observations_per_species=3, image_size=24)
    gen.ensure(tmp_path / "syn")
    stamp = (tmp_path / "syn" / "manifest.csv").stat().st_mtime_ns
    (tmp_path / "syn" / "MY_NOTES.txt").write_text("mine")
    gen.ensure(tmp_path / "syn")
    assert (tmp_path / "syn" / "manifest.csv").stat().st_mtime_ns == stamp  # cached
    before = sorted(p.name for p in (tmp_path / "syn").rglob("*"))
    other = SyntheticSpecies(num_species=3, observations_per_species=3, image_size=24, seed=1)
    with pytest.raises(FileExistsError) as refused:
        other.ensure(tmp_path / "syn")
    said = str(refused.value)
    assert "made with num_species=2, seed=0, not num_species=3, seed=1; nothing was" in said
    assert f"data.root={tmp_path / 'syn'}_num_species3_seed1" in said
    assert sorted(p.name for p in (tmp_path / "syn").rglob("*")) == before
    assert (tmp_path / "syn" / "manifest.csv").stat().st_mtime_ns == stamp
    (tmp_path / "syn" / "manifest.csv").unlink()  # a damaged copy: not repaired by deleting
    with pytest.raises(FileExistsError, match="incomplete copy"):
        gen.ensure(tmp_path / "syn")
    assert (tmp_path / "syn" / "MY_NOTES.txt").read_text() == "mine"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "precious.jpg").write_bytes(b"x")
    with pytest.raises(FileExistsError, match="not a synthetic dataset"):
        gen.ensure(tmp_path / "mine")
    assert (tmp_path / "mine" / "precious.jpg").exists()
    (tmp_path / "empty").mkdir()
    gen.ensure(tmp_path / "empty")  # an empty folder is filled
    assert gen.is_generated_at(tmp_path / "empty")


def test_the_generated_folder_is_readable_by_the_lab(tmp_path: Path):
    """Made with the umask's mode, as any new folder (0755 under the usual 022), not 0700."""
    old = os.umask(0o022)
    try:
        SyntheticSpecies(num_species=2, observations_per_species=3, image_size=24).ensure(
            tmp_path / "syn"
        )
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "syn").stat().st_mode) == 0o755


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="cue_species"):
        SyntheticSpecies(num_species=3, cue_species=5)


def _ensure(root: str) -> str:
    """One process of many: make sure the dataset is there, return its manifest's text."""
    gen = SyntheticSpecies(num_species=4, observations_per_species=12, image_size=32, seed=5)
    gen.ensure(root, progress=False)
    return (Path(root) / "manifest.csv").read_text()


def test_processes_started_at_once_share_one_dataset_and_spare_the_users_tmp(tmp_path):
    """A sweep's jobs (or two terminals) on a fresh clone: one process generates, the others
    wait and reuse it; a folder named like the old temporary one, the user's, is untouched."""
    import multiprocessing as mp

    root = tmp_path / "data" / "synthetic"
    users = tmp_path / "data" / "synthetic.tmp"
    users.mkdir(parents=True)
    (users / "notes.txt").write_text("mine")
    with mp.get_context("spawn").Pool(4) as pool:
        manifests = pool.map(_ensure, [str(root)] * 4)
    assert len(set(manifests)) == 1 and manifests[0].count("\n") > 40
    assert (users / "notes.txt").read_text() == "mine"
    leftovers = [
        p.name for p in root.parent.iterdir() if p.name not in ("synthetic", "synthetic.tmp")
    ]
    assert leftovers == [".synthetic.lock"]  # no temporary folder left behind


@pytest.mark.slow
def test_a_run_with_other_generator_settings_leaves_the_shared_data_alone(shared_data_dir):
    """Run B with another seed while run A reads the embedded data (the shared test data here):
    B stops in one line naming the folder and what differs; A's photos are untouched."""
    root = shared_data_dir / "synthetic"
    SyntheticSpecies(**_small_settings()).ensure(root)  # what the suite's runs read
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*")}
    res = run_cli(
        "train.py",
        *SMALL,
        "data.synthetic.seed=1",
        "debug=fast_dev_run",
        tmp_path=shared_data_dir.parent / "other_seed",
        data_dir=shared_data_dir,
    )
    assert res.returncode != 0
    line = res.stderr.strip().splitlines()[-1]  # the run's last word
    assert line.startswith(f"config error: data: {root} holds the synthetic dataset made with")
    assert "seed=0, not seed=1; nothing was changed" in line and "Traceback" not in res.stderr
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*")} == before


def _small_settings() -> dict:
    """The generator settings of tests/helpers/cli.py's SMALL runs."""
    prefix = "data.synthetic."
    found = dict(o[len(prefix) :].split("=") for o in SMALL if o.startswith(prefix))
    typed = {k: int(v) if v.isdigit() else v == "true" for k, v in found.items()}
    return typed
