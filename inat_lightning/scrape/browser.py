"""Selenium backend: headless Chromium scrolls iNaturalist's infinite observation grid.

Scroll to the bottom, wait (explicitly, no fixed sleeps) until new tiles have loaded or the list
has ended, repeat until enough photos are listed. Each tile gives a photo URL (``<img src>`` or
CSS ``background-image``), mapped to the wanted size variant, and an observation id (its link).
Selectors and the page URL template come from config, because the real site's markup changes.
The grid carries no license or attribution: those manifest columns stay empty with this backend.
"""

from __future__ import annotations

import logging
import re
import shutil
from collections.abc import Iterator, Sequence
from urllib.parse import urljoin

from inat_lightning.scrape.inat_api import PhotoItem, Taxon, photo_id_from_url, sized_url
from inat_lightning.validation import require

log = logging.getLogger(__name__)
_CSS_URL = re.compile(r"""url\(\s*['"]?(.*?)['"]?\s*\)""")
_OBS_ID = re.compile(r"/observations/(\d+)")
HEADLESS_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1600",
)


def tile_photo_url(style_or_src: str) -> str | None:
    """The URL in a ``background-image: url("…")`` value, or a plain ``src``."""
    m = _CSS_URL.search(style_or_src or "")
    if m:
        return m.group(1) or None
    return style_or_src or None


def observation_id_from_href(href: str) -> str | None:
    m = _OBS_ID.search(href or "")
    return m.group(1) if m else None


class BrowserLister:
    """Lists a taxon's photos by scrolling the grid in headless Chromium
    (``scrape/backend=browser``).

    Args:
        page_url: grid URL template; ``{base}``, ``{taxon_id}``, ``{quality_grade}`` and
            ``{licenses}`` are filled in.
        base_url: site root.
        tile_selector: CSS selector of a photo tile (a link to the observation).
        image_selector: CSS selector, inside a tile, of an ``<img>`` (else the tile's
            ``background-image`` is read).
        end_selector: CSS selector present once the list has no more results ("" = none).
        chromium_path, chromedriver_path: explicit binaries (Selenium Manager never runs).
        load_timeout: seconds to wait for new tiles after a scroll before calling it the end.
        max_scrolls: hard bound on scroll rounds.
        extra_flags: more Chromium command-line flags.
    """

    def __init__(
        self,
        page_url: str = (
            "{base}/observations?taxon_id={taxon_id}&view=grid"
            "&quality_grade={quality_grade}&photo_license={licenses}"
        ),
        base_url: str = "https://www.inaturalist.org",
        tile_selector: str = ".thumbnail a.img",
        image_selector: str = "img",
        end_selector: str = "[data-end='true']",
        chromium_path: str = "/usr/bin/chromium",
        chromedriver_path: str = "/usr/bin/chromedriver",
        load_timeout: float = 15.0,
        max_scrolls: int = 500,
        extra_flags: Sequence[str] = (),
    ) -> None:
        rules = {
            "load_timeout": (load_timeout > 0, "> 0 s"),
            "max_scrolls": (max_scrolls >= 1, ">= 1"),
        }
        require(rules, {"load_timeout": load_timeout, "max_scrolls": max_scrolls})
        self.page_url, self.base_url = page_url, base_url
        self.tile_selector, self.image_selector = tile_selector, image_selector
        self.end_selector = end_selector
        self.chromium_path, self.chromedriver_path = chromium_path, chromedriver_path
        self.load_timeout, self.max_scrolls = load_timeout, max_scrolls
        self.extra_flags = list(extra_flags)
        self._driver = None

    def _start(self):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        for path, key in (
            (self.chromium_path, "chromium_path"),
            (self.chromedriver_path, "chromedriver_path"),
        ):
            if not shutil.which(path):
                raise FileNotFoundError(
                    f"scrape.backend.{key}={path!r} not found; install Debian's chromium and "
                    "chromium-driver (make browser) or set the path"
                )
        opts = webdriver.ChromeOptions()
        opts.binary_location = self.chromium_path
        for flag in (*HEADLESS_FLAGS, *self.extra_flags):
            opts.add_argument(flag)
        return webdriver.Chrome(
            service=Service(executable_path=self.chromedriver_path), options=opts
        )

    @property
    def driver(self):
        if self._driver is None:
            self._driver = self._start()
        return self._driver

    def close(self) -> None:
        if self._driver is not None:
            self._driver.quit()
            self._driver = None

    def __enter__(self) -> BrowserLister:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_tile(self, tile) -> tuple[str | None, str | None]:
        from selenium.webdriver.common.by import By

        imgs = (
            tile.find_elements(By.CSS_SELECTOR, self.image_selector) if self.image_selector else []
        )
        raw = (
            imgs[0].get_attribute("src") if imgs else tile.value_of_css_property("background-image")
        )
        url = tile_photo_url(raw)
        url = urljoin(self.driver.current_url, url) if url else None  # relative URLs too
        return url, observation_id_from_href(tile.get_attribute("href") or "")

    def iter_photos(
        self,
        taxon: Taxon,
        size: str = "medium",
        quality_grade: str | None = None,
        licenses: Sequence[str] | None = None,
    ) -> Iterator[PhotoItem]:
        """Photos of a taxon's grid, in page order, until the list's end or ``max_scrolls``
        (or until the caller stops reading). ``quality_grade`` and ``licenses`` fill the page
        URL template."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        d = self.driver
        d.get(
            self.page_url.format(
                base=self.base_url.rstrip("/"),
                taxon_id=taxon.id,
                quality_grade=quality_grade or "any",
                licenses=",".join(licenses or []),
            )
        )
        seen: set[str] = set()
        read = 0
        ended = (
            (lambda drv: bool(drv.find_elements(By.CSS_SELECTOR, self.end_selector)))
            if self.end_selector
            else (lambda drv: False)
        )
        for _ in range(self.max_scrolls):
            try:  # the first tiles, or the ones this scroll asked for
                WebDriverWait(d, self.load_timeout).until(
                    lambda drv, n=read: (
                        len(drv.find_elements(By.CSS_SELECTOR, self.tile_selector)) > n
                        or ended(drv)
                    )
                )
            except TimeoutException:
                log.info(
                    "no new tiles after %.0f s: taking it as the end of the list", self.load_timeout
                )
                return
            tiles = d.find_elements(By.CSS_SELECTOR, self.tile_selector)
            for tile in tiles[read:]:
                url, obs_id = self._read_tile(tile)
                photo_id = photo_id_from_url(url or "")
                if not url or not photo_id or not obs_id or photo_id in seen:
                    continue
                seen.add(photo_id)
                yield PhotoItem(
                    photo_id=photo_id, observation_id=obs_id, taxon=taxon, url=sized_url(url, size)
                )
            read = len(tiles)
            if ended(d):
                return
            d.execute_script("window.scrollTo(0, document.body.scrollHeight);")
