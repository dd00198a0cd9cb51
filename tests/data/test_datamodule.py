import logging
from collections import Counter
from pathlib import Path

import pytest
import torch

from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.split import SplitSpec
from tests.helpers.data import make_image_folder


def dm(root, **kw) -> ImageFolderDataModule:
    kw = {"image_size": 32, "batch_size": 8, "num_workers": 0, **kw}
    return ImageFolderDataModule(root, **kw)


def test_splits_from_manifest_are_grouped_and_written(tiny_synthetic: Path, tmp_path: Path):
    d = dm(tiny_synthetic, splits_out=tmp_path / "splits.csv")
    d.setup()
    assert d.num_classes == 8 and d.class_names == sorted(d.class_names)
    obs = {s: {r.observation_id for r in d.records[s]} for s in ("train", "val", "test")}
    assert (
        not (obs["train"] & obs["val"])
        and not (obs["train"] & obs["test"])
        and not (obs["val"] & obs["test"])
    )
    assert (tmp_path / "splits.csv").read_text().count("\n") == 1 + sum(
        len(v) for v in d.records.values()
    )
    batch = next(iter(d.train_dataloader()))
    assert batch["image"].shape == (8, 3, 32, 32) and batch["image"].dtype == torch.float32
    assert batch["n_skipped"] == 0
    val = next(iter(d.val_dataloader()))
    assert val["image"].shape[-1] == 32


def test_corrupt_images_are_reported_and_skipped(tmp_path: Path, caplog):
    root = make_image_folder(tmp_path / "ds", {"a": 12, "b": 12})
    (root / "a" / "0.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    good = (root / "b" / "1.jpg").read_bytes()
    (root / "b" / "1.jpg").write_bytes(good[: len(good) // 2])  # truncated
    # (2 of 24 is above the 5 % refused before any work: allowed here, to test the loader)
    d = dm(root, split=SplitSpec(ratios=(0.5, 0.25, 0.25)), batch_size=64, max_missing=1.0)
    d.setup()
    seen, skipped = 0, 0
    with caplog.at_level(logging.WARNING):
        for loader in (d.train_dataloader(), d.val_dataloader(), d.test_dataloader()):
            for batch in loader:
                seen += 0 if batch["image"] is None else len(batch["label"])
                skipped += batch["n_skipped"]
    assert skipped == 2 and seen == 22
    assert "a/0.jpg" in caplog.text and "b/1.jpg" in caplog.text


def test_whole_batch_corrupt_gives_empty_batch(tmp_path: Path):
    root = make_image_folder(tmp_path / "ds", {"a": 3, "b": 3})
    for p in root.rglob("*.jpg"):
        p.write_bytes(b"garbage")
    d = dm(root, max_missing=1.0)
    d.setup()
    batch = next(iter(d.train_dataloader()))
    assert batch["image"] is None and batch["n_skipped"] == len(d.datasets["train"])


def test_too_small_class_is_named_or_dropped(tmp_path: Path, caplog):
    root = make_image_folder(tmp_path / "ds", {"Big one": 10, "Other": 10, "Tiny species": 2})
    with pytest.raises(ValueError, match="Tiny species"):
        dm(root).setup()
    d = dm(root, min_per_class=3)
    with caplog.at_level(logging.WARNING):
        d.setup()
    assert d.class_names == ["Big one", "Other"] and "Tiny species" in caplog.text


@pytest.mark.parametrize("held", [["a", "b", "c"], ["b", "c"]], ids=["every class", "all but one"])
def test_holding_out_too_many_classes_is_named(tmp_path: Path, held):
    root = make_image_folder(tmp_path / "ds", {"a": 5, "b": 5, "c": 5})
    with pytest.raises(ValueError, match=rf"^held_out_classes: holds out {len(held)} of the 3 "):
        dm(root, held_out_classes=held).setup()


def test_missing_root_and_empty_dataset(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="root="):
        dm(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images"):
        dm(tmp_path / "empty").setup()


def test_bad_values_are_named(tmp_path: Path):
    with pytest.raises(ValueError, match="balance"):
        dm(tmp_path, balance="maybe")
    with pytest.raises(ValueError, match="batch_size"):
        dm(tmp_path, batch_size=0)


def test_class_balancing(tmp_path: Path):
    root = make_image_folder(tmp_path / "ds", {"common": 60, "rare": 8})
    d = dm(root, balance="loss")
    d.setup()
    w = d.class_weights
    counts = d.class_counts
    assert w[1] > w[0] and torch.isclose(w[0] / w[1], counts[1] / counts[0])
    assert dm(root).class_weights is None

    d = dm(root, balance="sampler", batch_size=64)
    d.setup()
    torch.manual_seed(0)
    labels = Counter()
    for _ in range(5):
        for batch in d.train_dataloader():
            labels.update(batch["label"].tolist())
    share_rare = labels[1] / sum(labels.values())
    assert 0.35 < share_rare < 0.65  # ~0.5 with the sampler, ~0.12 without
