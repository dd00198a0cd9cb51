"""Long runs you can watch from a log: epoch lines, plain progress off a terminal, throughput."""

import re

import pytest

from inat_lightning import progress as progress_module
from inat_lightning.data.manifest import read_manifest
from inat_lightning.progress import LineProgress, duration
from inat_lightning.scrape.scraper import scrape
from tests.fakeinat.server import FakeINat
from tests.helpers.scrape import scrape_cfg
from tests.helpers.tensorboard import tensorboard_tags

EPOCH_LINE = re.compile(
    r"epoch (?P<epoch>\d+)/2 \| train/loss [\d.]+ \| val/f1_macro [\d.]+ \(best [\d.]+\) \| "
    r"lr [\d.e-]+ \| [\d.]+ img/s, loader wait \d+% \| [\d.]+ s( \| ETA \S+)?$"
)


@pytest.mark.slow
def test_epoch_lines_reach_stderr_and_train_log_off_a_terminal(short_training):
    run, res = short_training  # stderr captured: not a terminal
    for text in (res.stderr, (run / "train.log").read_text()):
        epochs = [m["epoch"] for m in map(EPOCH_LINE.search, text.splitlines()) if m]
        assert epochs == ["1", "2"], text[-3000:]
        assert "ETA" in next(ln for ln in text.splitlines() if EPOCH_LINE.search(ln))
        assert "checkpoint: new best val/f1_macro" in text
    assert "\r" not in res.stderr  # no carriage-return bars in a log


@pytest.mark.slow
def test_throughput_scalars_are_in_tensorboard(short_training):
    run, _ = short_training
    scalars = tensorboard_tags(run)["scalars"]
    for tag in ("perf/train_images_per_s", "perf/val_images_per_s", "perf/test_images_per_s"):
        assert scalars[tag] and all(e.value > 0 for e in scalars[tag]), tag
    shares = [e.value for e in scalars["perf/loader_wait_share"]]
    assert len(shares) == 2 and all(0 <= s <= 1 for s in shares)


def test_line_progress_writes_lines_with_rate_and_eta(caplog):
    caplog.set_level("INFO", logger="inat_lightning.progress")
    bar = LineProgress(total=4, desc="Danaus plexippus", unit="img", every_s=0)
    with bar:
        for _ in range(4):
            bar.set_postfix(failed=0)
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4  # one per update; the end adds none: the last line said it all
    assert lines[1].startswith("Danaus plexippus: 2/4 img (50%), ") and "ETA" in lines[1]
    assert lines[-1].endswith("failed=0")
    assert duration(3725) == "1h02m" and duration(125) == "2m05s" and duration(7.2) == "7s"


def test_scrape_off_a_terminal_prints_per_taxon_progress_lines(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(progress_module, "is_terminal", lambda: False)
    caplog.set_level("INFO", logger="inat_lightning.progress")
    with FakeINat(num_taxa=2, observations_per_taxon=4) as fake:
        cfg = scrape_cfg(
            tmp_path,
            fake,
            "scrape.progress=true",
            "scrape.progress_every=0",
            "scrape.max_per_taxon=3",
        )
        scrape(cfg)
        names = [t["name"] for t in fake.taxa]
    lines = [r.getMessage() for r in caplog.records]
    assert len(read_manifest(tmp_path / "inat" / "manifest.csv")) == 6
    for name in names:
        mine = [ln for ln in lines if ln.startswith(f"{name}: ")]
        assert mine, lines
        last = mine[-1]
        assert "3/3 img (100%)" in last and "img/s" in last
        assert re.search(r"listed=\d+, downloaded=3, failed=0, MB=\d+\.\d", last), last
    assert any(ln.startswith("taxa: 2/2 taxon") for ln in lines)
