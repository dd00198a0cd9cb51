"""Nothing escapes its folder: manifest rows, symlinks and photo ids that point outside the root
are refused or skipped with a message naming them; oversized images are never decoded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from inat_lightning.analysis.audit import AuditConfig, FaithfulnessAudit
from inat_lightning.analysis.gradcam import CamSetting
from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.dataset import ImageDataset
from inat_lightning.data.manifest import MANIFEST_NAME, Record, load_records, write_manifest
from inat_lightning.scrape.backend import PhotoItem, Taxon
from inat_lightning.scrape.download import Downloader
from inat_lightning.scrape.http import HttpClient
from inat_lightning.scrape.inat_api import parse_observation
from tests.helpers.data import make_image_folder


def manifest_root(tmp_path: Path, paths: list[str]) -> Path:
    root = make_image_folder(tmp_path / "root", {"a": 2}, 16)
    rows = [Record(str(i), str(i), "1", "a", p) for i, p in enumerate(paths)]
    write_manifest(root / MANIFEST_NAME, rows)
    return root


@pytest.mark.parametrize("bad", ["../outside.jpg", "/etc/passwd", "a/../../x.jpg"])
def test_manifest_rows_leaving_the_root_are_refused_and_named(tmp_path, bad):
    root = manifest_root(tmp_path, ["a/0.jpg", bad])
    with pytest.raises(ValueError, match=rf"row 3 \(photo_id 1\): path '{bad}' leaves"):
        load_records(root)


def test_duplicate_rows_are_counted_once_with_a_warning(tmp_path, caplog):
    root = manifest_root(tmp_path, ["a/0.jpg", "a/1.jpg", "a/0.jpg"])
    with caplog.at_level("WARNING"):
        records = load_records(root)
    assert sorted(r.path for r in records) == ["a/0.jpg", "a/1.jpg"]
    assert "1 duplicate rows" in caplog.text


def test_symlinks_out_of_the_root_and_pixel_bombs_are_skipped_not_read(tmp_path, caplog):
    root = make_image_folder(tmp_path / "root", {"a": 1}, 16)
    secret = tmp_path / "secret.jpg"
    Image.new("RGB", (16, 16), "red").save(secret)
    os.symlink(secret, root / "a" / "link.jpg")
    Image.new("L", (300, 300)).save(root / "a" / "big.png")  # 90,000 pixels, tiny file
    ds = ImageDataset(root, ["a/0.jpg", "a/link.jpg", "a/big.png"], [0, 0, 0], max_pixels=10_000)
    with caplog.at_level("WARNING"):
        items = [ds[i] for i in range(3)]
    assert items[0] is not None and items[1] is None and items[2] is None
    assert (
        "leaves the dataset root" in caplog.text and "exceeds data.max_pixels=10000" in caplog.text
    )


@pytest.mark.parametrize("listed", ["by a folder scan", "by a manifest"])
def test_a_class_folder_symlinked_to_another_disk_is_refused_as_such(tmp_path, listed):
    """Not "not readable images": a symlink out of the root, named with where it leads. Class
    folders are no exception to the root (a shared dataset can hold a folder symlink as easily
    as a file one): the folder is refused before any image is read."""
    root = make_image_folder(tmp_path / "root", {"a": 6, "b": 6}, 16)
    make_image_folder(tmp_path / "other_disk", {"c": 6}, 16)
    os.symlink(tmp_path / "other_disk" / "c", root / "c")
    if listed == "by a manifest":
        rows = [Record(f"{c}{i}", f"{c}{i}", c, c, f"{c}/{i}.jpg") for c in "abc" for i in range(6)]
        write_manifest(root / MANIFEST_NAME, rows)
        error = (
            r"6 are symlinks out of the dataset root, never read \(first: c/\d\.jpg -> \S*other_d"
        )
    else:
        error = r"root/c: a class folder symlinked to \S*other_disk/c, outside the dataset root"
    with pytest.raises(ValueError, match=error) as refused:
        ImageFolderDataModule(root, image_size=16, num_workers=0).setup()
    assert "not readable images" not in str(refused.value)


def test_the_audit_skips_unreadable_images_and_lists_them(tmp_path):
    from inat_lightning.data.spec import InputSpec
    from inat_lightning.models.backbones import resnet

    root = make_image_folder(tmp_path / "root", {"a": 3, "b": 3}, 32)
    (root / "a" / "1.jpg").write_bytes(b"not a jpeg")
    records = [Record(f"{c}{i}", f"{c}{i}", "1", c, f"{c}/{i}.jpg") for c in "ab" for i in range(3)]
    audit = FaithfulnessAudit(AuditConfig(cam=CamSetting(target_layer="layer4"), max_per_class=3))
    rows = audit.run(resnet(18, 2), root, records, ["a", "b"], InputSpec(32))
    assert [r.images for r in rows] == [2, 3] and audit.skipped == ["a/1.jpg"]
    # at any class count, the faithfulness metrics cover max_classes classes (most images first)
    records.append(Record("b3", "b3", "1", "b", "b/2.jpg"))
    few = FaithfulnessAudit(
        AuditConfig(cam=CamSetting(target_layer="layer4"), max_per_class=3, max_classes=1)
    )
    assert [r.class_ for r in few.run(resnet(18, 2), root, records, ["a", "b"], InputSpec(32))] == [
        "b"
    ]


@pytest.mark.parametrize("photo_id", ["../../x", "²³", "٣٤", "12\n", "-1", ""])
def test_photo_ids_that_are_not_ascii_numbers_never_name_a_file(tmp_path, photo_id):
    taxon = Taxon(1, "Apis mellifera")
    obs = {"id": 5, "photos": [{"id": photo_id, "url": "https://h/photos/1/square.jpg"}]}
    assert parse_observation(obs, taxon, licenses=None) == []
    downloader = Downloader(tmp_path / "out", HttpClient(10, "test"), progress=False)
    item = PhotoItem(photo_id, "5", taxon, "https://h/photos/1/medium.jpg")
    summary = downloader.run([item])
    assert summary.failed == 1 and "not a number" in summary.failures[0][2]
    assert not (tmp_path / "x.jpg").exists() and not list((tmp_path / "out").rglob("*.jpg"))
