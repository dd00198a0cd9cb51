"""scrape.py against a fake iNaturalist on 127.0.0.1: API backend, downloader faults, rate limits,
resume after SIGKILL, and what was scraped feeding train.py."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from inat_lightning.config import ConfigError
from inat_lightning.data.manifest import read_manifest, sha256_of, write_manifest
from inat_lightning.data.near_duplicates import Signature, photo_signature
from inat_lightning.data.taxonomy import read_taxa
from inat_lightning.scrape.budget import SharedByteBudget
from inat_lightning.scrape.download import Downloader
from inat_lightning.scrape.http import ByteBudget, HttpClient, host_allowed
from inat_lightning.scrape.scraper import scrape
from tests.fakeinat.server import FakeINat
from tests.helpers.cli import REPO, run_cli, run_dirs
from tests.helpers.scrape import CC, FAST, scrape_cfg


def failures_csv(tmp_path: Path) -> Path:
    return tmp_path / "inat" / "failures.csv"


def max_per_second(times: list[float]) -> int:
    """The largest number of requests that arrived within any 1-second window."""
    return max(sum(t0 <= t < t0 + 1.0 for t in times) for t0 in times)


#: how late a request may reach the fake server after the rate limiter let it go: the server's
#: threads wait for the GIL behind the scrape's, and the suite's two workers share the cores
JITTER_S = 0.25


def assert_rate_held(times: list[float], rate: float) -> None:
    """Seen from the server, at most ``rate`` requests per second, on average and in every
    1-second window (+1 for the window's two ends), each request allowed :data:`JITTER_S` late:
    requests the limiter spaced evenly can arrive bunched, not more of them."""
    times = sorted(times)
    assert len(times) - 1 <= rate * (times[-1] - times[0] + JITTER_S), (len(times), rate)
    assert max_per_second(times) <= rate * (1 + JITTER_S) + 1, (max_per_second(times), rate)


# the scrape's own files at the top of its folder; everything else must be a manifest row
BOOKKEEPING = {
    "manifest.csv",
    "failures.csv",
    ".scrape.lock",
    ".scrape.lock.pid",  # who holds the lock, for the message a second scrape gets
    "taxa.csv",
    "DATASET.md",
    "CREDITS.csv",
}


def assert_tree_is_exactly(root: Path, fake: FakeINat, expected: dict[int, int]) -> None:
    """Every expected photo once, in its species folder, decodable, matching its manifest row,
    and nothing else: no partial, no duplicate, no corrupt file."""
    rows = read_manifest(root / "manifest.csv")
    assert sorted(int(r.photo_id) for r in rows) == sorted(expected)
    files = sorted(
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() not in BOOKKEEPING
    )
    assert files == sorted(r.path for r in rows)
    for r in rows:
        body = (root / r.path).read_bytes()
        assert sha256_of(body) == r.sha256
        with Image.open(root / r.path) as img:
            img.load()
            assert photo_signature(img) == Signature(r.phash, r.lowfreq)  # made at download
        assert r.taxon_name == fake.taxa[expected[int(r.photo_id)]]["name"]
        assert r.path.startswith(r.taxon_name + "/")
    assert not (root / ".partial").exists()


def test_api_scrape_writes_imagefolder_and_manifest(tmp_path):
    with FakeINat(num_taxa=3, observations_per_taxon=12) as fake:
        summary = scrape(scrape_cfg(tmp_path, fake, "scrape.backend.per_page=5"))
        expected = fake.expected_photos(CC)
        assert_tree_is_exactly(tmp_path / "inat", fake, expected)
        assert summary.downloaded == len(expected) and summary.failed == 0
        rows = {int(r.photo_id): r for r in read_manifest(tmp_path / "inat" / "manifest.csv")}
        for pid, r in rows.items():  # per-photo license and attribution, from the API
            photo = fake.photo_json(pid)
            assert (r.license, r.attribution) == (photo["license_code"], photo["attribution"])
            assert r.url.endswith(f"/photos/{pid}/medium.jpg?{pid % 997}")
            assert r.quality_grade == "research" and (r.width, r.height) == (64, 64)
            owner = fake.photo_owner[pid]
            assert r.observation_id == str(owner.id) and r.taxon_id == str(1000 + owner.taxon_index)
            user = fake.observation_json(owner)["user"]  # the observer, for group_by=observer
            assert (r.observer_id, r.observer) == (str(user["id"]), user["login"])
            assert r.observed_on == fake.observation_json(owner)["observed_on"]
            # the place, as varied as the API gives it: missing, obscured, garbage
            sent = fake.place_json(owner)
            lat, lon = fake.place(owner)
            placed = owner.id % 6 not in (2, 4)  # 2: no place; 4: not a coordinate pair
            assert (r.latitude, r.longitude) == ((lat, lon) if placed else (None, None))
            assert r.coords_obscured is (sent["obscured"] if placed else None)
            accuracy = sent["positional_accuracy"]
            expected_accuracy = accuracy if isinstance(accuracy, int) and accuracy >= 0 else None
            assert r.pos_accuracy == expected_accuracy and r.captive is False
        # each taxon's lineage once in taxa.csv, from /v1/taxa/<id>
        taxa = read_taxa(tmp_path / "inat" / "taxa.csv")
        assert set(taxa) == {str(t["id"]) for t in fake.taxa}
        for t in fake.taxa:
            entry = taxa[str(t["id"])]
            assert entry.name == t["name"]
            assert entry.lineage == {a["rank"]: a["name"] for a in fake.ancestors[t["id"]]}
            assert entry.ancestor_ids == tuple(str(i) for i in t["ancestor_ids"][:-1])
        lineage_requests = [p for _, k, p in fake.requests if k == "api" and "/taxa/" in p]
        assert len(lineage_requests) == len(fake.taxa)
        # id_above paging: 5 per page, every request asked for the next ids
        pages = [p for _, k, p in fake.requests if k == "api" and "/observations" in p]
        assert len(pages) >= 3 * (12 // 5)
        assert all("order_by=id" in p and "id_above=" in p for p in pages)

        # a second run finds everything done and downloads nothing
        n_photo_requests = len(fake.request_times("photo"))
        again = scrape(scrape_cfg(tmp_path, fake, "scrape.backend.per_page=5"))
        assert again.downloaded == 0 and again.skipped == len(expected)
        assert len(fake.request_times("photo")) == n_photo_requests
        # lineages are known: not asked again
        assert len([p for _, k, p in fake.requests if k == "api" and "/taxa/" in p]) == len(
            fake.taxa
        )


def test_captive_organisms_are_left_out_unless_asked_for(tmp_path):
    with FakeINat(num_taxa=2, observations_per_taxon=9, captive_every=4) as fake:
        expected = fake.expected_photos(CC)
        captive = {p for p in expected if fake.photo_owner[p].id % 4 == 0}
        assert captive and captive != set(expected)
        scrape(scrape_cfg(tmp_path / "wild", fake))
        rows = read_manifest(tmp_path / "wild" / "inat" / "manifest.csv")
        assert {int(r.photo_id) for r in rows} == set(expected) - captive
        scrape(scrape_cfg(tmp_path / "all", fake, "scrape.captive=true"))
        rows = read_manifest(tmp_path / "all" / "inat" / "manifest.csv")
        assert {int(r.photo_id) for r in rows} == set(expected)
        assert {int(r.photo_id) for r in rows if r.captive} == captive


def test_faults_are_retried_or_recorded_and_rate_limits_hold(tmp_path):
    probe = FakeINat(num_taxa=2, observations_per_taxon=30)
    ids = sorted(probe.expected_photos(CC))
    faults = {
        ids[0]: ["500", "500"],
        ids[1]: ["429"],
        ids[2]: ["timeout"],
        ids[3]: ["truncate"] * 4,  # an image that decodes wrongly on every try: for good
        ids[4]: ["html"] * 4,  # a maintenance page on every try: it may pass, a re-run tries
        ids[5]: ["404"],
        ids[6]: ["500"] * 4,  # more than this run's 4 attempts: a re-run gets it
    }
    with FakeINat(
        num_taxa=2, observations_per_taxon=30, faults=faults, api_429_every=3, retry_after=0.5
    ) as fake:
        summary = scrape(
            scrape_cfg(
                tmp_path,
                fake,
                "scrape.backend.per_page=4",
                "scrape.retries=3",
                "scrape.api_rate=8",
                "scrape.media_rate=15",
            )
        )
        failed = {ids[3], ids[4], ids[5], ids[6]}
        expected = {p: t for p, t in fake.expected_photos(CC).items() if p not in failed}
        assert_tree_is_exactly(tmp_path / "inat", fake, expected)
        assert summary.failed == 4
        rows = {int(r["photo_id"]): r for r in csv.DictReader(failures_csv(tmp_path).open())}
        assert "does not decode" in rows[ids[3]]["reason"] and "every try" in rows[ids[3]]["reason"]
        assert "not an image: Content-Type text/html" in rows[ids[4]]["reason"]
        assert "HTTP 404" in rows[ids[5]]["reason"]
        assert "gave up after 4 attempts: HTTP 500" in rows[ids[6]]["reason"]
        kinds = [rows[i]["kind"] for i in ids[3:7]]
        assert kinds == ["permanent", "transient", "permanent", "transient"]

        # the global rate limits are never exceeded, seen from the server
        assert_rate_held(fake.request_times("api"), 8)
        assert_rate_held(fake.request_times("photo"), 15)
        # Retry-After is honoured: the retry of the 429'd photo came >= 0.5 s later
        t429 = [t for t, k, p in fake.requests if k == "photo" and f"/photos/{ids[1]}/" in p]
        assert len(t429) == 2 and t429[1] - t429[0] >= 0.5
        # 404 is not retried, 500 is retried `retries` times
        assert sum(f"/photos/{ids[5]}/" in p for _, _, p in fake.requests) == 1
        assert sum(f"/photos/{ids[6]}/" in p for _, _, p in fake.requests) == 4

        # a re-run fetches exactly the transient failures, skips the permanent ones
        before = len(fake.request_times("photo"))
        again = scrape(scrape_cfg(tmp_path, fake, "scrape.backend.per_page=4"))
        photos = [p for _, k, p in fake.requests if k == "photo"][before:]
        asked = sorted(p.split("/")[2] for p in photos)
        assert asked == sorted(str(i) for i in (ids[4], ids[6]))
        assert again.downloaded == 2 and again.known_failures == 2
        for i in (ids[4], ids[6]):
            expected[i] = fake.expected_photos(CC)[i]
        assert_tree_is_exactly(tmp_path / "inat", fake, expected)
        rows = {int(r["photo_id"]) for r in csv.DictReader(failures_csv(tmp_path).open())}
        assert rows == {ids[3], ids[5]}  # the resolved ones are gone


def test_oversize_bodies_are_refused(tmp_path):
    with FakeINat(num_taxa=2, observations_per_taxon=3) as fake:
        summary = scrape(scrape_cfg(tmp_path, fake, "scrape.max_bytes=500"))  # JPEGs are ~2 KB
        assert summary.downloaded == 0 and summary.failed == len(fake.expected_photos(CC))
        assert "exceeds max_bytes" in (tmp_path / "inat" / "failures.csv").read_text()


def test_same_bytes_under_two_photo_ids_are_stored_once(tmp_path):
    probe = FakeINat(num_taxa=2, observations_per_taxon=6)
    first, second = sorted(probe.expected_photos(CC))[:2]
    with FakeINat(num_taxa=2, observations_per_taxon=6, duplicates={second: first}) as fake:
        summary = scrape(scrape_cfg(tmp_path, fake, "scrape.workers=4"))
        rows = read_manifest(tmp_path / "inat" / "manifest.csv")
        assert summary.duplicates == 1 and len(rows) == len(fake.expected_photos(CC)) - 1
        assert len({r.sha256 for r in rows}) == len(rows)
        assert {int(r.photo_id) for r in rows} & {first, second} == {first}


@pytest.mark.parametrize("shared", [False, True])
def test_byte_budget_pauses_until_the_window_frees(tmp_path, shared):
    """One process's budget, or a fleet's: two budgets on one file see each other's bytes."""
    limits = [(0.4, 1000), (3600, None)]
    if shared:
        path = tmp_path / "bytes.sqlite"
        budget, other = SharedByteBudget(limits, path), SharedByteBudget(limits, path)
    else:
        budget = other = ByteBudget(limits)
    budget.wait()  # empty: no wait
    budget.add(600)
    t0 = time.monotonic()
    budget.wait()  # 600 < 1000: no wait (the bound leaves room for a busy machine)
    assert time.monotonic() - t0 < 0.2
    other.add(600)  # 1200 >= 1000: wait until the first body leaves the 0.4 s window
    budget.wait()
    assert 0.3 < time.monotonic() - t0 < 3.0  # not the hour's window


def test_per_taxon_cap_and_size_variant(tmp_path):
    with FakeINat(num_taxa=2, observations_per_taxon=12) as fake:
        scrape(scrape_cfg(tmp_path, fake, "scrape.max_per_taxon=5", "scrape.size=small"))
        rows = read_manifest(tmp_path / "inat" / "manifest.csv")
        assert Counter(r.taxon_name for r in rows) == {t["name"]: 5 for t in fake.taxa}
        assert all("/small.jpg" in r.url and r.width == 48 for r in rows)


def test_listing_stops_once_the_taxon_is_full(tmp_path):
    # 3 photos wanted, 2 observations per page: 2 pages hold them, 6 pages exist
    with FakeINat(num_taxa=1, observations_per_taxon=12) as fake:
        cfg = scrape_cfg(tmp_path, fake, "scrape.max_per_taxon=3", "scrape.backend.per_page=2")
        scrape(cfg)
        pages = [p for _, k, p in fake.requests if k == "api" and "/observations" in p]
        assert len(read_manifest(tmp_path / "inat" / "manifest.csv")) == 3
        assert 1 <= len(pages) <= 3, pages


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("scrape.size=huge", "scrape.size='huge'"),
        ("scrape.api_rate=0", "scrape.api_rate=0"),
        ("scrape.taxa=[]", "scrape.taxa"),
        ("scrape.workers=0", "scrape.workers=0"),
        ("scrape.backend.per_page=500", "scrape.backend.per_page=500: must be in [1, 200]"),
        ("+scrape.backend.per_pag=10", "scrape.backend.per_pag: unknown key"),
        ("scrape.backend._target_=no.Such", "scrape.backend._target_=no.Such: cannot import"),
    ],
)
def test_bad_scrape_config_fails_before_any_request(tmp_path, override, message):
    with FakeINat(num_taxa=1, observations_per_taxon=2) as fake:
        with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")):
            scrape(scrape_cfg(tmp_path, fake, override))
        assert fake.requests == []


def test_a_backend_of_the_users_own_package_scrapes_and_a_non_lister_is_refused(tmp_path):
    """docs/extending.md: a PhotoLister subclass that implements only ``iter_photos``, named by
    ``_target_``, scrapes like the project's own; anything else is refused before a request."""
    own = "tests.helpers.own_backend"
    with FakeINat(num_taxa=2, observations_per_taxon=5) as fake:
        refused = ["~scrape.backend", f"+scrape.backend={{_target_:{own}.NotALister}}"]
        with pytest.raises(ConfigError, match=r"^scrape\.backend: NotALister is not a PhotoLister"):
            scrape(scrape_cfg(tmp_path / "refused", fake, *refused))
        assert fake.requests == []
        mine = ["~scrape.backend", f"+scrape.backend={{_target_:{own}.FirstPhotos,keep:2}}"]
        scrape(scrape_cfg(tmp_path, fake, *mine))
        rows = read_manifest(tmp_path / "inat" / "manifest.csv")
        assert sorted(Counter(r.taxon_name for r in rows).values()) == [2, 2]


def test_unknown_taxon_is_reported_and_others_continue(tmp_path):
    with FakeINat(num_taxa=2, observations_per_taxon=4) as fake:
        cfg = scrape_cfg(tmp_path, fake)
        cfg.scrape.taxa = ["Nonexistus fictus", fake.taxa[1]["name"], str(fake.taxa[0]["id"])]
        summary = scrape(cfg)
        assert (
            summary.failed == 1
            and "Nonexistus fictus" in (tmp_path / "inat" / "failures.csv").read_text()
        )
        assert set(summary.per_taxon) == {t["name"] for t in fake.taxa}


@pytest.mark.slow
def test_killed_scrape_resumes_to_the_exact_tree(tmp_path):
    """SIGKILL the real CLI midway, run it again: same tree as an uninterrupted scrape."""
    with FakeINat(num_taxa=2, observations_per_taxon=40, latency=0.02) as fake:
        taxa = ",".join(t["name"] for t in fake.taxa)
        args = [
            sys.executable,
            str(REPO / "scrape.py"),
            f"paths.log_dir={tmp_path / 'logs'}",
            f"scrape.api_url={fake.base_url}/v1",
            f"scrape.taxa=[{taxa}]",
            f"scrape.out={tmp_path / 'inat'}",
            *FAST,
            "scrape.media_rate=10",
            "scrape.backend.per_page=10",
        ]
        manifest = tmp_path / "inat" / "manifest.csv"
        expected = fake.expected_photos(CC)
        # killed at several random points, each time resumed by the same command
        for kill_after in sorted(random.Random(7).sample(range(2, len(expected) - 10), 3)):
            proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and proc.poll() is None:
                if manifest.is_file() and manifest.read_text().count("\n") > kill_after:
                    break
                time.sleep(0.02)
            assert proc.poll() is None, "the scrape finished before it could be killed"
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            assert 0 < len(read_manifest(manifest, skip_incomplete=True)) < len(expected)

        res = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert_tree_is_exactly(tmp_path / "inat", fake, expected)
        assert "skipped" in res.stdout
        # the same manifest as one uninterrupted run, row for row (order aside)
        scrape(scrape_cfg(tmp_path / "straight", fake, "scrape.backend.per_page=10"))
        straight = read_manifest(tmp_path / "straight" / "inat" / "manifest.csv")
        by_id = {r.photo_id: r for r in straight}
        assert sorted(r.photo_id for r in read_manifest(manifest)) == sorted(by_id)
        assert all(r == by_id[r.photo_id] for r in read_manifest(manifest))


@pytest.mark.slow
def test_train_on_what_was_scraped(tmp_path):
    with FakeINat(num_taxa=3, observations_per_taxon=12) as fake:
        scrape(scrape_cfg(tmp_path, fake))
    res = run_cli(
        "train.py",
        "data=imagefolder",
        f"data.root={tmp_path / 'inat'}",
        "model=resnet18",
        "data.image_size=32",
        "data.num_workers=0",
        "data.batch_size=8",
        "trainer.max_epochs=1",
        tmp_path=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    (run,) = run_dirs(tmp_path / "logs")
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["class_names"] == sorted(t["name"] for t in fake.taxa)
    assert sum(summary["split_sizes"].values()) == len(fake.expected_photos(CC))
    # the split grouped the scraped photos by their iNaturalist observation
    splits = (run / "splits.csv").read_text().splitlines()[1:]
    by_obs: dict[str, set[str]] = {}
    for line in splits:
        _, obs, _, split = line.rsplit(",", 3)
        by_obs.setdefault(obs, set()).add(split)
    assert all(len(s) == 1 for s in by_obs.values())


def test_a_second_scrape_on_the_same_folder_is_refused(tmp_path):
    with FakeINat(num_taxa=1, observations_per_taxon=2) as fake:
        first = Downloader(tmp_path / "inat", HttpClient(10, "test"), progress=False)
        with pytest.raises(ConfigError, match=r"^scrape\.out=.*another scrape \(pid \d+\)"):
            scrape(scrape_cfg(tmp_path, fake))
        first.close()  # released: the next scrape runs
        assert scrape(scrape_cfg(tmp_path, fake)).downloaded > 0


def test_the_manifest_keeps_user_columns_and_rows_whose_file_is_missing(tmp_path, caplog):
    with FakeINat(num_taxa=1, observations_per_taxon=6) as fake:
        scrape(scrape_cfg(tmp_path, fake))
        manifest = tmp_path / "inat" / "manifest.csv"
        rows = read_manifest(manifest)
        for r in rows:
            r.extra = {"notes": f"seen {r.photo_id}"}
        write_manifest(manifest, rows)
        gone = rows[0]
        (tmp_path / "inat" / gone.path).unlink()  # a file lost (a drive not mounted…)
        cfg = scrape_cfg(tmp_path, fake, "scrape.max_per_taxon=1")  # full: nothing is fetched
        with caplog.at_level("WARNING"):
            scrape(cfg)
        assert "1 manifest row(s) point to missing files" in caplog.text
        after = {r.photo_id: r for r in read_manifest(manifest)}
        assert set(after) == {r.photo_id for r in rows}  # nothing dropped
        assert all(r.extra == {"notes": f"seen {pid}"} for pid, r in after.items())
        # listed again in full, the lost file is fetched again and keeps its notes
        scrape(scrape_cfg(tmp_path, fake))
        assert (tmp_path / "inat" / gone.path).is_file()
        again = {r.photo_id: r for r in read_manifest(manifest)}
        assert len(again) == len(rows) and again[gone.photo_id].extra == {
            "notes": f"seen {gone.photo_id}"
        }
        # pruning is explicit, and the old manifest is kept beside it
        (tmp_path / "inat" / gone.path).unlink()
        scrape(scrape_cfg(tmp_path, fake, "scrape.prune_missing=true", "scrape.max_per_taxon=1"))
        assert gone.photo_id not in {r.photo_id for r in read_manifest(manifest)}
        backup = read_manifest(tmp_path / "inat" / "manifest.csv.bak")
        assert gone.photo_id in {r.photo_id for r in backup}


@pytest.mark.slow
def test_ctrl_c_ends_a_scrape_in_one_line_with_failures_written(tmp_path):
    with FakeINat(
        num_taxa=1, observations_per_taxon=40, latency=0.05, faults={90000: ["404"]}
    ) as fake:
        args = [
            sys.executable,
            str(REPO / "scrape.py"),
            f"paths.log_dir={tmp_path / 'logs'}",
            f"scrape.api_url={fake.base_url}/v1",
            f"scrape.taxa=[{fake.taxa[0]['name']}]",
            f"scrape.out={tmp_path / 'inat'}",
            *FAST,
            "scrape.media_rate=5",
        ]
        proc = subprocess.Popen(
            args,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            # a suite started in the background (`make test &`, nohup) ignores SIGINT, and its
            # children inherit that: give the scrape the terminal's default, as a user's has
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        manifest = tmp_path / "inat" / "manifest.csv"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if manifest.is_file() and manifest.read_text().count("\n") > 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err.decode()[-2000:]
    assert "scrape: interrupted; re-run the same command to resume" in err.decode()
    assert "Traceback" not in err.decode()
    assert "90000" in (tmp_path / "inat" / "failures.csv").read_text()  # written on the way out
    assert len(read_manifest(manifest)) >= 5


def test_permanent_failures_are_tried_again_only_when_asked(tmp_path):
    with FakeINat(num_taxa=1, observations_per_taxon=4, faults={90000: ["404"]}) as fake:
        scrape(scrape_cfg(tmp_path, fake))
        asked = lambda: sum("/photos/90000/" in p for _, _, p in fake.requests)  # noqa: E731
        assert asked() == 1
        assert scrape(scrape_cfg(tmp_path, fake)).known_failures == 1 and asked() == 1
        scrape(scrape_cfg(tmp_path, fake, "scrape.retry_failed=true"))
        assert asked() == 2


def test_a_full_disk_ends_the_scrape_in_one_line_with_failures_written(
    tmp_path, monkeypatch, capsys
):
    import inat_lightning.scrape.download as download

    real_fsync, writes = os.fsync, []

    def fsync(fd: int) -> None:
        writes.append(fd)
        if len(writes) > 4:  # a few photos in, the disk fills up
            raise OSError(28, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(download.os, "fsync", fsync)
    faults = {90000: ["404"]}
    with (
        FakeINat(num_taxa=1, observations_per_taxon=8, faults=faults) as fake,
        pytest.raises(SystemExit) as stopped,
    ):
        scrape(scrape_cfg(tmp_path, fake, "scrape.workers=1"))
    assert stopped.value.code == 1
    err = capsys.readouterr().err
    assert "stopped by a disk error" in err and "No space left on device" in err
    assert "90000" in (tmp_path / "inat" / "failures.csv").read_text()
    assert not list((tmp_path / "inat").rglob("*.part"))  # nothing half-written left behind


@pytest.mark.slow
def test_two_scrape_processes_share_one_polite_budget(tmp_path):
    """A fleet (two terminals, two Slurm jobs) on one budget folder: together they stay within
    the one polite rate, in every 1-second window, for the API and for photos."""
    with FakeINat(num_taxa=2, observations_per_taxon=25) as fake:
        procs = []
        for i, taxon in enumerate(fake.taxa):
            args = [
                sys.executable,
                str(REPO / "scrape.py"),
                f"paths.log_dir={tmp_path / f'logs{i}'}",
                f"scrape.api_url={fake.base_url}/v1",
                f"scrape.taxa=[{taxon['name']}]",
                f"scrape.out={tmp_path / f'inat{i}'}",
                *FAST,
                "scrape.media_rate=8",
                "scrape.api_rate=4",
                f"scrape.budget_dir={tmp_path / 'budget'}",
            ]
            procs.append(subprocess.Popen(args, cwd=REPO, stderr=subprocess.PIPE, text=True))
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors[0][-2000:] + errors[1][-2000:]
        photos = fake.request_times("photo")
        api = fake.request_times("api")
    assert len(photos) >= 40  # both processes fetched, at the same time
    # one budget for the fleet, not 2 x 8
    assert_rate_held(photos, 8)
    assert_rate_held(api, 4)


def test_a_scrape_and_the_demo_start_without_importing_torch(tmp_path):
    """What a scrape run imports (its task, the Hydra callbacks its config names) and the demo's
    own process: no torch, whose import costs seconds a scrape does not need."""
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("scrape", return_hydra_config=True)
    targets = [c["_target_"] for c in cfg.hydra.callbacks.values()]
    modules = ["inat_lightning.scrape.scraper", "inat_lightning.demo"]
    modules += [t.rsplit(".", 1)[0] for t in targets]
    code = f"import sys, importlib\nfor m in {modules!r}: importlib.import_module(m)\n"
    code += "print(sorted(m for m in ('torch', 'torchvision', 'lightning') if m in sys.modules))"
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(targets) >= 1 and res.stdout.strip() == "[]", (modules, res.stdout)


def test_plain_http_is_never_fetched_unless_allowed(tmp_path):
    """The fake serves plain http, so every other scrape test sets ``scrape.allow_http=true``;
    with the default (false) not one request leaves: the taxon is a failure naming the rule."""
    with FakeINat(num_taxa=1, observations_per_taxon=3) as fake:
        summary = scrape(scrape_cfg(tmp_path, fake, "scrape.allow_http=false"))
        assert fake.requests == [] and summary.downloaded == 0 and summary.failed == 1
        assert "scheme 'http' not allowed (allowed: https)" in summary.failures[0][2]


@pytest.mark.parametrize(
    ("url", "allow_http", "why"),
    [
        ("https://static.inaturalist.org/photos/1/medium.jpg", False, None),
        ("http://static.inaturalist.org/photos/1/medium.jpg", False, "scheme 'http' not allowed"),
        ("http://static.inaturalist.org/photos/1/medium.jpg", True, None),
        ("https://inaturalist.org.evil.example/p.jpg", False, "not in the allowed hosts"),
        ("file:///etc/passwd", True, "scheme 'file' not allowed"),
    ],
)
def test_a_photo_url_needs_https_and_an_allowed_host(url, allow_http, why):
    found = host_allowed(url, ["inaturalist.org"], allow_http)
    assert found is None if why is None else why in found
