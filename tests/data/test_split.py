import csv
import random
import re
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import pytest

from inat_lightning.data.manifest import Record
from inat_lightning.data.split import (
    SPLITS,
    SplitSpec,
    hashed_split,
    read_splits,
    split_records,
    write_splits,
)


def records(classes: dict[str, int], views: int = 2, start: int = 0) -> list[Record]:
    out = []
    for name, n_obs in classes.items():
        for o in range(start, start + n_obs):
            for v in range(views):
                out.append(
                    Record(f"{name}-{o}-{v}", f"{name}-{o}", name, name, f"{name}/{o}-{v}.jpg")
                )
    return out


RATIOS = (0.7, 0.15, 0.15)


def test_grouped_by_observation():
    recs = records({"a": 50, "b": 30}, views=3)
    splits = split_records(recs, RATIOS, seed=0)
    per_obs = defaultdict(set)
    for r, s in zip(recs, splits):
        per_obs[r.observation_id].add(s)
    assert all(len(s) == 1 for s in per_obs.values())


@pytest.mark.parametrize("seed", range(4))
def test_stratified_shares_follow_the_ratios(seed):
    recs = records({"big": 2000, "mid": 400}, views=1)
    splits = split_records(recs, RATIOS, seed=seed)
    for cls in ("big", "mid"):
        c = Counter(s for r, s in zip(recs, splits) if r.taxon_name == cls)
        n = sum(c.values())
        for split, p in zip(("train", "val", "test"), RATIOS):
            sigma = (p * (1 - p) / n) ** 0.5  # hashing is binomial sampling per class
            assert abs(c[split] / n - p) < 4.5 * sigma, (cls, split, c)


def test_every_class_reaches_every_split_even_when_small():
    recs = records({f"c{i}": 3 + i % 4 for i in range(40)}, views=1)
    splits = split_records(recs, RATIOS, seed=2)
    for i in range(40):
        assert {s for r, s in zip(recs, splits) if r.taxon_name == f"c{i}"} == {
            "train",
            "val",
            "test",
        }


def test_deterministic_and_seed_dependent():
    recs = records({"a": 100, "b": 100})
    assert split_records(recs, RATIOS, 7) == split_records(list(recs), RATIOS, 7)
    assert split_records(recs, RATIOS, 7) != split_records(recs, RATIOS, 8)


def test_stable_when_images_and_observations_are_added():
    old = records({"a": 60, "b": 45})
    new = old + records({"a": 30, "b": 20}, start=1000) + records({"c": 25})
    before = dict(zip((r.path for r in old), split_records(old, RATIOS, 3)))
    after = dict(zip((r.path for r in new), split_records(new, RATIOS, 3)))
    assert all(after[p] == s for p, s in before.items())


def test_previous_split_file_pins_images(tmp_path: Path):
    recs = records({"a": 40, "b": 40})
    splits = split_records(recs, RATIOS, 0)
    write_splits(tmp_path / "splits.csv", recs, splits)
    assert read_splits(tmp_path / "splits.csv") == {r.path: s for r, s in zip(recs, splits)}
    # another seed would move things, but the file pins every listed image
    spec = SplitSpec(ratios=RATIOS, seed=99, file=str(tmp_path / "splits.csv"))
    assert spec.assign(recs) == splits


def edited_splits(
    path: Path, recs: list[Record], splits: list[str], edit: Callable[[str], str]
) -> None:
    """``splits.csv`` for ``recs`` as a spreadsheet may save it: ``edit`` rewrites its text."""
    write_splits(path, recs, splits)
    path.write_bytes(edit(path.read_text()).encode("utf-8"))


SPREADSHEET_EDITS = {
    "Test": lambda t: t.replace(",test,", ",Test,"),
    "TEST": lambda t: t.replace(",test,", ",TEST,"),
    " test ": lambda t: t.replace(",test,", ", test ,"),
    "byte-order mark": lambda t: "\ufeff" + t,
    "Path,Split header": lambda t: t.replace("path,", "Path,", 1).replace(",split,", ",Split,", 1),
}


@pytest.mark.parametrize("edit", SPREADSHEET_EDITS.values(), ids=SPREADSHEET_EDITS)
def test_a_split_file_saved_by_a_spreadsheet_still_pins_every_image(tmp_path: Path, edit):
    """``Test`` is ``test``: the test split is never silently empty."""
    recs = records({"a": 40, "b": 40})
    splits = split_records(recs, RATIOS, 0)
    edited_splits(tmp_path / "splits.csv", recs, splits, edit)
    pinned = SplitSpec(ratios=RATIOS, seed=99, file=str(tmp_path / "splits.csv")).assign(recs)
    assert pinned == splits and "test" in pinned


def first_row_again_in_another_split(text: str) -> str:
    path, obs, name, split, moved = text.splitlines()[1].split(",")
    return text + ",".join([path, obs, name, "val" if split != "val" else "test", moved]) + "\n"


BAD_SPLIT_FILES = {
    "no split column": (lambda t: t.replace(",split,", ",fold,", 1), r"no 'split' column"),
    "no path column": (lambda t: t.replace("path,", "image,", 1), r"no 'path' column"),
    "unknown split": (lambda t: t.replace(",test,", ",tset,", 1), r"row \d+, column split: 'tset'"),
    "empty split": (lambda t: t.replace(",test,", ",,", 1), r"row \d+, column split: '' is not"),
    "empty path": (lambda t: t.replace("\na/0-0.jpg,", "\n,", 1), r"row 2, column path: empty"),
    "one path in two splits": (
        first_row_again_in_another_split,
        r"row 82, column split: 'a/0-0\.jpg' is \w+ here, \w+ at row 2",
    ),
}


@pytest.mark.parametrize("edit, error", BAD_SPLIT_FILES.values(), ids=BAD_SPLIT_FILES)
def test_a_bad_split_file_is_one_line_naming_the_file_and_row(tmp_path: Path, edit, error):
    recs = records({"a": 20, "b": 20})
    edited_splits(tmp_path / "splits.csv", recs, split_records(recs, RATIOS, 0), edit)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path))}/splits\.csv: {error}"):
        SplitSpec(file=str(tmp_path / "splits.csv")).assign(recs)


@pytest.mark.parametrize("ratios", [(0.5, 0.6, 0.1), (0.7, 0.3), (-0.1, 0.6, 0.5), (0.0, 0.5, 0.5)])
def test_bad_ratios_are_named(ratios):
    with pytest.raises(ValueError, match="ratios="):
        SplitSpec(ratios=ratios)


def test_missing_split_file_is_named(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="file="):
        SplitSpec(file=str(tmp_path / "nope.csv"))


def observed(n: int, observers: int, seed: int, start: int = 0) -> list[Record]:
    """``n`` observations of 5 classes by ``observers`` people; one person photographs several
    species (so grouping by observer cannot be per class)."""
    rng = random.Random(seed)
    out = []
    for o in range(start, start + n):
        cls, who = f"c{rng.randrange(5)}", f"u{rng.randrange(observers)}"
        for v in range(rng.randint(1, 3)):
            out.append(Record(f"{o}-{v}", str(o), cls, cls, f"{cls}/{o}-{v}.jpg", observer_id=who))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_group_by_observer_never_puts_one_observer_in_two_splits(seed):
    recs = observed(400, observers=30 + seed * 7, seed=seed)
    splits = SplitSpec(seed=seed, group_by="observer").assign(recs)
    per_observer = defaultdict(set)
    for r, s in zip(recs, splits):
        per_observer[r.observer_id].add(s)
    assert all(len(s) == 1 for s in per_observer.values())
    assert set(splits) == {"train", "val", "test"}


def test_group_by_observer_is_stable_as_data_grows():
    old = observed(300, observers=40, seed=1)
    new = old + observed(200, observers=60, seed=2, start=10_000)  # new photos, new people
    spec = SplitSpec(seed=4, group_by="observer")
    before = dict(zip((r.path for r in old), spec.assign(old)))
    after = dict(zip((r.path for r in new), spec.assign(new)))
    assert all(after[p] == s for p, s in before.items())


def test_a_record_without_observer_is_its_own_group():
    recs = observed(100, observers=10, seed=0)
    recs += [Record("x", "obs-x", "c0", "c0", "c0/x.jpg")]  # a plain folder image
    assert len(SplitSpec(group_by="observer").assign(recs)) == len(recs)


@pytest.mark.parametrize("group_by", ["observation", "observer"])
def test_folds_are_disjoint_cover_the_non_test_data_and_keep_groups_whole(group_by):
    recs = observed(300, observers=50, seed=3)
    k = 4
    assigned = [
        SplitSpec(seed=1, group_by=group_by, folds=k, fold=f).assign(recs) for f in range(k)
    ]
    tests = [{r.path for r, s in zip(recs, a) if s == "test"} for a in assigned]
    assert all(t == tests[0] for t in tests) and tests[0]  # the test split is fixed
    vals = [{r.path for r, s in zip(recs, a) if s == "val"} for a in assigned]
    assert all(not (vals[i] & vals[j]) for i in range(k) for j in range(i + 1, k))
    assert set().union(*vals) == {r.path for r in recs} - tests[0]
    for a in assigned:  # groups whole within every fold assignment
        per_group = defaultdict(set)
        for r, s in zip(recs, a):
            per_group[r.observer_id if group_by == "observer" else r.observation_id].add(s)
        assert all(len(s) == 1 for s in per_group.values())
    sizes = [len(v) for v in vals]
    assert max(sizes) < 2 * min(sizes)  # dealt evenly, not left to chance


@pytest.mark.parametrize(
    "kwargs, key",
    [
        ({"folds": 1}, "folds"),
        ({"folds": 3, "fold": 3}, "fold"),
        ({"group_by": "user"}, "group_by"),
    ],
)
def test_bad_fold_settings_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=f"^{key}="):
        SplitSpec(**kwargs)


@pytest.mark.parametrize("seed", range(8))
def test_small_classes_growing_move_only_what_splits_csv_marks_and_a_file_pins_all(tmp_path, seed):
    """Adding observations to small classes: an observation that changes split is marked
    ``moved`` in the old or the new ``splits.csv`` (the small-class repair; large classes never
    move one); with the old file as ``data.split.file`` none changes split."""
    rng = random.Random(seed)
    sizes = {f"c{i}": rng.randint(3, 25) for i in range(12)}
    old = records(sizes)
    grown = {c: rng.randint(1, 6) for c in sizes if rng.random() < 0.7}
    new = old + records(grown, start=1000)
    spec = SplitSpec(ratios=RATIOS, seed=seed)
    before, after = spec.assign(old), spec.assign(new)
    write_splits(tmp_path / "old.csv", old, before, spec.moved(old, before))
    write_splits(tmp_path / "new.csv", new, after, spec.moved(new, after))
    rows = {
        name: {r["path"]: r for r in csv.DictReader((tmp_path / name).open())}
        for name in ("old.csv", "new.csv")
    }
    changed = [r.path for r, b, a in zip(old, before, after[: len(old)]) if a != b]
    for path in changed:
        assert "yes" in (rows["old.csv"][path]["moved"], rows["new.csv"][path]["moved"]), path
    # each class still reaches every split
    for c in sizes:
        assert {s for r, s in zip(new, after) if r.taxon_name == c} == set(SPLITS)
    pinned = SplitSpec(ratios=RATIOS, seed=seed, file=str(tmp_path / "old.csv")).assign(new)
    assert pinned[: len(old)] == before


def test_moved_marks_exactly_the_records_off_their_hashed_split():
    recs = records({"tiny": 3, "big": 200})
    spec = SplitSpec(ratios=RATIOS, seed=1)
    splits = spec.assign(recs)
    moved = spec.moved(recs, splits)
    assert not any(m for r, m in zip(recs, moved) if r.taxon_name == "big")  # hashed alone
    tiny = [(s, m) for r, s, m in zip(recs, splits, moved) if r.taxon_name == "tiny"]
    assert {s for s, _ in tiny} == set(SPLITS)
    hashed = {hashed_split(1, "tiny", f"obs:{r.observation_id}", RATIOS) for r in recs[:6]}
    assert any(m for _, m in tiny) == (hashed != set(SPLITS))
