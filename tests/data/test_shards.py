"""Shards (``inat_lightning.data.shards``, ``python -m inat_lightning.shards build``): the same
photos, split and inputs as the ImageFolder they were built from; deterministic, resumable
builds; untrusted shards and indexes read as data, a corrupt one an error naming it."""

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.resumable import EpochSampler, PlaceMismatch, ResumableLoader
from inat_lightning.data.shard_datamodule import ShardDataModule
from inat_lightning.data.shards import ShardError, parse_index, read_card
from inat_lightning.data.split import read_splits
from inat_lightning.data.stores import LocalStore, S3Store, StoreError, open_store
from inat_lightning.shards import build
from tests.cluster.s3_server import make_bucket, running
from tests.helpers.cli import compose_config
from tests.helpers.data import make_cued_photos


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    """40 real photos (2 classes, cue boxes in the manifest) and one that does not decode."""
    root = make_cued_photos(tmp_path_factory.mktemp("photos") / "set", per_class=20)
    (root / "Plain fish" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return root


def build_set(tmp_path: Path, photos: Path, out: Path | str, *overrides: str) -> dict:
    cfg = compose_config(
        "shards", tmp_path, f"data.root={photos}", f"out={out}", "shard_photos=6", *overrides
    )
    return build(cfg)


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith(".build.lock")
    }


def test_shards_hold_the_imagefolders_split_records_and_inputs(tmp_path, photos):
    card = build_set(tmp_path, photos, tmp_path / "set")
    folder = ImageFolderDataModule(photos, image_size=32, splits_out=tmp_path / "a.csv")
    shards = ShardDataModule(tmp_path / "set", image_size=32, splits_out=tmp_path / "b.csv")
    folder.setup()
    shards.setup()
    assert shards.class_names == folder.class_names == card["classes"]
    assert shards.fingerprint()["records_sha256"] == folder.fingerprint()["records_sha256"]
    assert sorted(read_splits(tmp_path / "a.csv").items()) == sorted(
        read_splits(tmp_path / "b.csv").items()
    )
    for split in ("train", "val", "test"):
        want = {r.path: r for r in folder.records[split]}
        got = {r.path: r for r in shards.records[split]}
        assert got == want  # every manifest column, cue boxes included, as the manifest has it
        assert card["splits"][split]["photos"] == len(want)
        if split == "train":
            continue
        at = {p: i for i, p in enumerate(shards.datasets[split].paths)}
        for i, path in enumerate(folder.datasets[split].paths):
            a, b = folder.datasets[split][i], shards.datasets[split][at[path]]
            if a is None:  # the photo that does not decode is skipped by both
                assert b is None and path.endswith("broken.jpg")
                continue
            assert torch.equal(a["image"], b["image"]) and a["label"] == b["label"]
    assert card["splits"]["train"]["shards"] == -(-card["splits"]["train"]["photos"] // 6)
    assert sum(card["splits"]["train"]["per_class"].values()) == len(folder.records["train"])


def test_a_build_is_deterministic_and_an_interrupted_one_keeps_its_shards(
    tmp_path, photos, monkeypatch
):
    build_set(tmp_path, photos, tmp_path / "once")
    written = []
    real_write = LocalStore.write

    def failing_write(self, name, data):
        if name.startswith("train/shard-00003-") and name.endswith(".tar"):
            raise OSError("disk full")
        written.append(name)
        real_write(self, name, data)

    monkeypatch.setattr(LocalStore, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        build_set(tmp_path, photos, tmp_path / "twice")
    assert any(n.startswith("train/shard-00002-") for n in written)
    assert not (tmp_path / "twice" / "shards.json").exists()
    monkeypatch.setattr(LocalStore, "write", real_write)
    rewritten = []
    monkeypatch.setattr(
        LocalStore, "write", lambda self, n, d: (rewritten.append(n), real_write(self, n, d))
    )
    build_set(tmp_path, photos, tmp_path / "twice")
    shards = [n for n in rewritten if n.endswith(".tar")]
    assert not any(n.startswith("train/shard-00000-") for n in shards)
    assert any(n.startswith("train/shard-00003-") for n in shards)
    once, twice = files_of(tmp_path / "once"), files_of(tmp_path / "twice")
    card_a, card_b = (json.loads(d.pop("shards.json")) for d in (once, twice))
    assert once == twice  # every shard, sidecar and index byte for byte
    assert card_a["fingerprint"] == card_b["fingerprint"]


def test_a_corrupt_or_truncated_shard_is_an_error_naming_it(tmp_path, photos):
    build_set(tmp_path, photos, tmp_path / "set")
    shards = ShardDataModule(tmp_path / "set", image_size=32, num_workers=0)
    shards.setup()
    test = shards.datasets["test"]
    first = test.photos[0]
    shard = tmp_path / "set" / test.reader.shards[0].name
    data = bytearray(shard.read_bytes())
    data[first.offset + first.size // 2] ^= 0xFF  # one flipped bit in a photo's bytes
    shard.write_bytes(bytes(data))
    with pytest.raises(ShardError, match=r"test/shard-00000-\w+\.tar: the bytes of .* do not m"):
        test[0]
    shard.write_bytes(bytes(data[: len(data) // 2]))  # cut short
    again = ShardDataModule(tmp_path / "set", image_size=32, num_workers=2)
    again.setup()
    with pytest.raises(Exception, match=r"shard-00000-\w+\.tar: \d+ bytes, the index says"):
        for _ in again.test_dataloader():  # through loader workers: an error, not a skip
            pass


def index_with(tmp_path: Path, photos: Path, change) -> bytes:
    build_set(tmp_path, photos, tmp_path / "set")
    index = json.loads((tmp_path / "set" / "val" / "index.json").read_bytes())
    change(index)
    return json.dumps(index).encode()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda i: i["photos"][0]["row"].update(path="../../etc/passwd"), "leaves the dataset"),
        (lambda i: i["shards"][0].update(name="../outside.tar"), "not a relative object name"),
        (lambda i: i["shards"][0].update(name="train/shard-00000.tar"), "is not in val/"),
        (lambda i: i["photos"][0].update(offset=10**9), "outside its shard"),
        (lambda i: i["photos"][0].update(size=-1), "is not an integer"),
        (lambda i: i["photos"][0].update(sha256="x" * 64), "is not a sha256"),
        (lambda i: i["photos"][0]["row"].update(latitude="95"), "column latitude"),
        (lambda i: i["photos"][0].update(row=["a", "b"]), "not a mapping"),
    ],
)
def test_an_untrusted_index_is_read_as_checked_data(tmp_path, photos, change, message):
    data = index_with(tmp_path, photos, change)
    with pytest.raises((ShardError, ValueError), match=message):
        parse_index(data, "s3://lab/set/val/index.json", "val")


def test_an_index_or_card_that_is_not_json_is_refused_not_run(tmp_path, photos):
    import pickle

    build_set(tmp_path, photos, tmp_path / "set")
    payload = pickle.dumps({"shards": [], "photos": []})  # a pickle is never unpickled
    with pytest.raises(ShardError, match="val/index.json: not a shard index"):
        parse_index(payload, "x/val/index.json", "val")
    (tmp_path / "set" / "shards.json").write_text(json.dumps({"format": "litdata", "version": 1}))
    with pytest.raises(ShardError, match="shards.json: not a shard card"):
        read_card(LocalStore(tmp_path / "set"))


def test_the_epoch_sampler_is_a_function_of_seed_epoch_and_rank():
    data = list(range(11))
    one = EpochSampler(data, seed=3)
    first = list(one)
    assert sorted(i for i, _ in first) == data and first == list(EpochSampler(data, seed=3))
    one.set_epoch(1)
    assert list(one) != first
    ranks = [list(EpochSampler(data, seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 6  # equal shares: one index repeated
    assert {i for r in ranks for i, _ in r} == set(data)
    later = EpochSampler(data, seed=3, num_replicas=2, rank=1)
    later.start_at(0, 4)
    assert list(later) == ranks[1][4:]
    later.set_epoch(1)  # the next epoch starts whole
    assert len(list(later)) == 6


class Indices:
    """A dataset of 20 that yields the index it is asked for (the sampler's key's first part)."""

    def __len__(self) -> int:
        return 20

    def __getitem__(self, key: tuple[int, int]) -> int:
        return key[0]


def test_the_loader_state_restores_its_place_and_refuses_other_contents():
    data = Indices()
    loader = ResumableLoader(data, batch_size=4, sampler=EpochSampler(data, seed=1))
    loader.progress = lambda: (2, 5)
    state = loader.state_dict()
    made_with = {"batch_size": 4, "world_size": 1, "photos": 20, "data": 0, "balanced": 0}
    made_with["seed"] = 1
    assert state == {"epoch": 0, "batches": 2, "of": 5, **made_with}
    again = ResumableLoader(data, batch_size=4, sampler=EpochSampler(data, seed=1))
    again.load_state_dict(state)
    whole = [b.tolist() for b in ResumableLoader(data, batch_size=4, sampler=EpochSampler(data, 1))]
    assert [b.tolist() for b in again] == whole[2:]
    again.load_state_dict({"epoch": 0, "batches": 3, "of": 3, **made_with})  # at its end
    assert again.sampler.epoch == 1 and len(list(again)) == 5
    with pytest.raises(ValueError, match="other contents"):
        again.load_state_dict({**state, "epoch": "os.system"})
    changed = {"batch_size": 8, "world_size": 2, "photos": 21, "data": 7, "balanced": 1, "seed": 2}
    for key, other in changed.items():
        with pytest.raises(PlaceMismatch, match=f"mid-epoch with {key}={other}, this run has"):
            again.load_state_dict({**state, key: other})
        again.load_state_dict({**state, key: other, "batches": 5})  # at its end: any run goes


def test_a_photos_augmentation_is_drawn_from_its_own_seed(tmp_path, photos):
    build_set(tmp_path, photos, tmp_path / "set")
    shards = ShardDataModule(tmp_path / "set", image_size=32)
    shards.setup()
    train = shards.datasets["train"]
    a, b = train[(0, 11)], train[(0, 11)]
    torch.manual_seed(0)
    c = train[(0, 12)]
    assert torch.equal(a["image"], b["image"]) and not torch.equal(a["image"], c["image"])


def test_a_store_url_with_credentials_or_without_a_bucket_is_refused():
    with pytest.raises(ValueError, match="credentials go in the environment"):
        open_store("s3://AKIA123:secret@bucket/set")
    with pytest.raises(ValueError, match="no bucket"):
        S3Store("s3:///set")
    with pytest.raises(ValueError, match="not a relative object name"):
        LocalStore("/tmp").read("../etc/passwd")
    with pytest.raises(ValueError, match="not a relative object name"):
        LocalStore("/tmp").read("train/a.tar\n")
    with pytest.raises(StoreError, match="no-such"):
        LocalStore("/tmp").read("no-such-object")


def test_a_local_store_does_not_follow_a_link_out_of_its_folder(tmp_path):
    (tmp_path / "set").mkdir()
    (tmp_path / "secret").write_text("key")
    (tmp_path / "set" / "shards.json").symlink_to(tmp_path / "secret")
    with pytest.raises(StoreError, match="a link out of"):
        LocalStore(tmp_path / "set").read("shards.json")


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server on 127.0.0.1 (moto's), its client environment set."""
    with running() as env, pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        make_bucket(env, "lab")
        yield env


def test_a_set_on_an_object_store_reads_as_the_same_set_on_disk(tmp_path, photos, s3):
    build_set(tmp_path, photos, tmp_path / "set")
    build_set(tmp_path, photos, "s3://lab/fish/v1")
    local = ShardDataModule(tmp_path / "set", image_size=32)
    remote = ShardDataModule("s3://lab/fish/v1", image_size=32, cache_dir=tmp_path / "cache")
    local.setup()
    remote.setup()
    assert remote.records == local.records
    assert remote.fingerprint()["shards"] == "s3://lab/fish/v1"
    for i in range(len(local.datasets["val"])):
        a, b = local.datasets["val"][i], remote.datasets["val"][i]
        assert (a is None and b is None) or torch.equal(a["image"], b["image"])
    fetched = sorted((tmp_path / "cache").glob("*.tar"))
    card = read_card(open_store("s3://lab/fish/v1"))
    assert len(fetched) == card["splits"]["val"]["shards"]  # fetched once each, named by content
    fetched[0].write_bytes(fetched[0].read_bytes()[:100])  # the cache's copy damaged since
    again = ShardDataModule("s3://lab/fish/v1", image_size=32, cache_dir=tmp_path / "cache")
    again.setup()
    with pytest.raises(ShardError, match=rf"{fetched[0]}: the cached copy of s3://lab/fish/v1/"):
        for i in range(len(again.datasets["val"])):
            again.datasets["val"][i]


def test_a_corrupt_object_in_the_store_is_an_error_naming_it(tmp_path, photos, s3):
    build_set(tmp_path, photos, "s3://lab/bad/v1")
    store = open_store("s3://lab/bad/v1")
    name = json.loads(store.read("test/index.json"))["shards"][0]["name"]
    store.write(name, store.read(name)[:-1024])  # truncated on the store
    remote = ShardDataModule("s3://lab/bad/v1", image_size=32, cache_dir=tmp_path / "cache")
    remote.setup()
    with pytest.raises(ShardError, match=rf"s3://lab/bad/v1/{name}: \d+ bytes"):
        remote.datasets["test"][0]
    assert not list((tmp_path / "cache").glob("*.tar"))  # nothing half-fetched kept
    missing = r"s3://lab/none/shards.json: no shard set here \(not found\)"
    with pytest.raises(ShardError, match=missing):
        ShardDataModule("s3://lab/none", cache_dir=tmp_path / "cache").setup()


def test_without_credentials_the_store_says_where_they_come_from(tmp_path, s3, monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(StoreError, match="AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"):
        open_store("s3://lab/fish/v1").read("shards.json")


def test_a_rebuild_rewrites_exactly_the_shards_whose_rows_or_photos_changed(tmp_path, photos):
    root = tmp_path / "photos"
    shutil.copytree(photos, root)
    build_set(tmp_path, root, tmp_path / "set")
    before = json.loads((tmp_path / "set" / "train" / "index.json").read_bytes())
    first, last = before["photos"][0]["row"]["path"], before["photos"][-1]["row"]["path"]
    manifest = root / "manifest.csv"  # a licence corrected in the first photo's row
    rows = manifest.read_text().splitlines()
    at = next(i for i, r in enumerate(rows) if f",{first}," in r)
    rows[at] = rows[at].replace(f",{first},", f",{first},cc-by-fixed")
    manifest.write_text("\n".join(rows) + "\n")
    photo = root / last  # the last photo's file rewritten (same bytes, a newer file)
    photo.write_bytes(photo.read_bytes())
    os.utime(photo, ns=(photo.stat().st_atime_ns, photo.stat().st_mtime_ns + 10**9))
    build_set(tmp_path, root, tmp_path / "set")
    after = json.loads((tmp_path / "set" / "train" / "index.json").read_bytes())
    names = [(a["name"], b["name"]) for a, b in zip(before["shards"], after["shards"])]
    assert names[0][0] != names[0][1]  # a new row: a new shard (the old one never reused)
    assert all(a == b for a, b in names[1:])  # the others kept
    assert after["photos"][0]["row"]["license"] == "cc-by-fixed"
    sidecar = json.loads((tmp_path / "set" / f"{after['shards'][-1]['name']}.json").read_bytes())
    assert sidecar["stats"][-1][1] == photo.stat().st_mtime_ns  # the changed file re-read


def test_thousands_of_shards_keep_few_files_open_and_a_read_fault_stops_the_run(
    tmp_path, photos, monkeypatch
):
    build_set(tmp_path, photos, tmp_path / "set", "shard_photos=1")  # a shard per photo
    monkeypatch.setattr("inat_lightning.data.shards.OPEN_SHARDS", 3)
    shards = ShardDataModule(tmp_path / "set", image_size=32)
    shards.setup()
    train = shards.datasets["train"]
    assert len(train.reader.shards) == len(train) > 3
    for i in range(len(train)):
        train[i]
        assert len(train.reader._files) <= 3
    reader = shards.datasets["val"].reader
    monkeypatch.setattr(reader, "local_path", lambda n: tmp_path / "no" / "such" / "cache")
    with pytest.raises(ShardError, match=r"val/shard-\d+-\w+\.tar: cannot be read \("):
        shards.datasets["val"][0]  # an error of the store or cache, never a skipped photo


def test_the_resume_point_is_written_mid_epoch_only_between_whole_steps(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from inat_lightning.callbacks.checkpoints import ResumePoint

    point = ResumePoint(tmp_path, every_n_train_steps=2)
    saved = []
    monkeypatch.setattr(point, "_save", lambda trainer: saved.append(trainer.global_step))
    trainer = SimpleNamespace(
        num_training_batches=20, accumulate_grad_batches=2, fast_dev_run=False
    )
    for i in range(20):  # the optimizer steps after every second batch
        trainer.global_step = (i + 1) // 2
        point.on_train_batch_end(trainer, None, None, None, i)
    assert saved == [2, 4, 6, 8]  # after the step's second batch; none at the epoch's last one
    with pytest.raises(ValueError, match="every_n_train_steps=0"):
        ResumePoint(tmp_path, every_n_train_steps=0)
