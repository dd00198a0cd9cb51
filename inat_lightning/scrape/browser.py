"""Selenium backend: headless Chromium scrolls iNaturalist's infinite observation grid.

Scroll to the bottom, wait (explicitly) until new tiles have loaded or the list has ended,
repeat. Sites load the next tiles on different triggers — a ``scroll`` listener on the window or
on an inner scroll box, an ``IntersectionObserver`` on a sentinel or on the last tile, a "Load
more" button, the End / PageDown keys — and a first batch may fit the window, so that the page
cannot scroll at all. So "scroll to the bottom" is a round of nudges that covers them all (see
:meth:`BrowserLister._nudge`), and the list ends only when a whole round brings no new tile
within ``load_timeout`` (or the end marker shows). A page that shows neither tiles nor the end
marker (an error page, a 429) is loaded again with backoff, not read as an empty list.

Each tile gives a photo URL (``<img src>`` or CSS ``background-image``), mapped to the wanted
size variant, and an observation id (its link). Selectors and the page URL template come from
config, because the real site's markup changes. The grid carries no license or attribution:
those manifest columns stay empty with this backend.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urljoin

from inat_lightning.scrape.backend import PhotoItem, PhotoLister, Taxon
from inat_lightning.scrape.http import HttpError
from inat_lightning.scrape.inat_api import photo_id_from_url, sized_url
from inat_lightning.validation import require

log = logging.getLogger(__name__)
_CSS_URL = re.compile(r"""url\(\s*['"]?(.*?)['"]?\s*\)""")
_OBS_ID = re.compile(r"/observations/(\d+)")
HEADLESS_FLAGS = (
    "--headless=new",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1600",
)
SMALL_WINDOW = (1280, 360)  # the last nudge: a window so small that any page scrolls
# one round of nudges in the page: bring the last tile into view, then scroll the window and
# every scroll box to the very bottom (what follows the last tile: a sentinel) and tell their
# scroll listeners
NUDGE_JS = """
const tiles = document.querySelectorAll(arguments[0]);
if (tiles.length) tiles[tiles.length - 1].scrollIntoView({block: 'end'});
window.scrollTo(0, document.documentElement.scrollHeight);
for (const el of document.querySelectorAll('*')) {
  const st = getComputedStyle(el).overflowY;
  if (st === 'auto' || st === 'scroll') { el.scrollTop = el.scrollHeight;
    el.dispatchEvent(new Event('scroll')); }
}
window.dispatchEvent(new Event('scroll')); document.dispatchEvent(new Event('scroll'));
"""


def tile_photo_url(style_or_src: str) -> str | None:
    """The URL in a ``background-image: url("…")`` value, or a plain ``src``."""
    m = _CSS_URL.search(style_or_src or "")
    if m:
        return m.group(1) or None
    return style_or_src or None


def observation_id_from_href(href: str) -> str | None:
    m = _OBS_ID.search(href or "")
    return m.group(1) if m else None


def start_chromium(
    chromium_path: str, chromedriver_path: str, sandbox: bool | None, extra_flags: Sequence[str]
) -> Any:
    """Headless Chromium under Selenium, from these binaries (Selenium Manager never runs);
    its sandbox off only when asked, or by default when running as root (where Chromium
    refuses to start with it)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path, key in ((chromium_path, "chromium_path"), (chromedriver_path, "chromedriver_path")):
        if not shutil.which(path):
            raise FileNotFoundError(
                f"scrape.backend.{key}={path!r} not found; install Debian's chromium and "
                "chromium-driver (make browser) or set the path"
            )
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium_path
    no_sandbox = sandbox is False or (sandbox is None and os.geteuid() == 0)
    for flag in (*HEADLESS_FLAGS, *(["--no-sandbox"] if no_sandbox else []), *extra_flags):
        opts.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=chromedriver_path), options=opts)


def read_tile(driver: Any, image_selector: str, tile: Any) -> tuple[str | None, str | None]:
    """A grid tile's photo URL (its ``<img>``, else its background image; made absolute) and
    its observation's id."""
    from selenium.webdriver.common.by import By

    imgs = tile.find_elements(By.CSS_SELECTOR, image_selector) if image_selector else []
    raw = imgs[0].get_attribute("src") if imgs else tile.value_of_css_property("background-image")
    url = tile_photo_url(raw)
    url = urljoin(driver.current_url, url) if url else None  # relative URLs too
    return url, observation_id_from_href(tile.get_attribute("href") or "")


class BrowserLister(PhotoLister):
    """Lists a taxon's photos by scrolling the grid in headless Chromium
    (``scrape/backend=browser``). A tile gives only the photo and its observation: the scrape
    asks the API for the rest (:attr:`tiles_only`).

    Args:
        page_url: grid URL template; ``{base}``, ``{taxon_id}``, ``{quality_grade}`` and
            ``{licenses}`` are filled in.
        base_url: site root.
        tile_selector: CSS selector of a photo tile (a link to the observation).
        image_selector: CSS selector, inside a tile, of an ``<img>`` (else the tile's
            ``background-image`` is read).
        end_selector: CSS selector present once the list has no more results ("" = none).
        chromium_path, chromedriver_path: explicit binaries (Selenium Manager never runs).
        more_selector: CSS selector of a "Load more" button or link, clicked in each round of
            nudges ("" = none).
        load_timeout: seconds to wait for new tiles after a round of nudges before calling it
            the end.
        max_scrolls: hard bound on rounds.
        page_retries: loads of a grid page that shows neither tiles nor the end marker (an error
            page) before the taxon's listing fails.
        backoff: first wait (s) before loading such a page again; doubles each time.
        sandbox: Chromium's sandbox; ``None`` turns it off only when running as root (where
            Chromium refuses to start with it).
        extra_flags: more Chromium command-line flags.
    """

    #: tiles carry no licence, date or place: the scrape fills them in from the API
    tiles_only = True

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
        more_selector: str = "button.load-more, a.load-more, button.show-more",
        chromium_path: str = "/usr/bin/chromium",
        chromedriver_path: str = "/usr/bin/chromedriver",
        load_timeout: float = 15.0,
        max_scrolls: int = 500,
        page_retries: int = 3,
        backoff: float = 2.0,
        sandbox: bool | None = None,
        extra_flags: Sequence[str] = (),
    ) -> None:
        rules = {
            "load_timeout": (load_timeout > 0, "> 0 s"),
            "max_scrolls": (max_scrolls >= 1, ">= 1"),
            "page_retries": (page_retries >= 0, ">= 0"),
        }
        require(rules, locals())
        self.page_url, self.base_url = page_url, base_url
        self.tile_selector, self.image_selector = tile_selector, image_selector
        self.end_selector, self.more_selector = end_selector, more_selector
        self.page_retries, self.backoff, self.sandbox = page_retries, backoff, sandbox
        self.chromium_path, self.chromedriver_path = chromium_path, chromedriver_path
        self.load_timeout, self.max_scrolls = load_timeout, max_scrolls
        self.extra_flags = list(extra_flags)
        self._driver = None

    @property
    def driver(self):
        if self._driver is None:
            self._driver = start_chromium(
                self.chromium_path, self.chromedriver_path, self.sandbox, self.extra_flags
            )
        return self._driver

    def close(self) -> None:
        if self._driver is not None:
            self._driver.quit()
            self._driver = None

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ the page
    def _count(self) -> int:
        from selenium.webdriver.common.by import By

        return len(self.driver.find_elements(By.CSS_SELECTOR, self.tile_selector))

    def _ended(self) -> bool:
        from selenium.webdriver.common.by import By

        return bool(self.end_selector) and bool(
            self.driver.find_elements(By.CSS_SELECTOR, self.end_selector)
        )

    def _wait_for_more(self, read: int, timeout: float) -> bool:
        """Wait until there are more than ``read`` tiles or the list has ended."""
        from selenium.common.exceptions import TimeoutException
        from selenium.webdriver.support.ui import WebDriverWait

        try:
            WebDriverWait(self.driver, timeout, poll_frequency=0.1).until(
                lambda _: self._count() > read or self._ended()
            )
        except TimeoutException:
            return False
        return True

    def _open(self, url: str) -> None:
        """Load a grid page; one that shows neither tiles nor the end marker (an error page, a
        429) is loaded again with backoff, then the listing fails (:class:`HttpError`)."""
        for attempt in range(self.page_retries + 1):
            self.driver.get(url)
            if self._wait_for_more(0, self.load_timeout):
                return
            if attempt < self.page_retries:
                wait = self.backoff * 2**attempt
                log.warning("grid page shows no tiles (an error page?); again in %.0f s", wait)
                time.sleep(wait)
        raise HttpError(
            f"{url}: no tiles and no end of list after {self.page_retries + 1} loads",
            transient=True,
        )

    def _nudge(self, read: int) -> bool:
        """One round of "scroll to the bottom" that covers every lazy-load trigger: scroll the
        window and every scroll box and tell their listeners, bring the last tile into view (for
        an IntersectionObserver), press End and PageDown, click "Load more"; if none of it
        brings a tile, shrink the window (a page shorter than it cannot scroll) and scroll again.
        True when new tiles came (or the list ended) within ``load_timeout``."""
        from selenium.webdriver.common.action_chains import ActionChains
        from selenium.webdriver.common.by import By
        from selenium.webdriver.common.keys import Keys

        d = self.driver
        quick = min(1.0, self.load_timeout)
        d.execute_script(NUDGE_JS, self.tile_selector)
        if self._wait_for_more(read, quick):
            return True
        ActionChains(d).send_keys(Keys.END).send_keys(Keys.PAGE_DOWN).perform()
        if self.more_selector:
            for button in d.find_elements(By.CSS_SELECTOR, self.more_selector):
                if button.is_displayed() and button.is_enabled():
                    d.execute_script("arguments[0].click();", button)
                    break
        if self._wait_for_more(read, quick):
            return True
        if tuple(d.get_window_size().values()) != SMALL_WINDOW:
            d.execute_script("window.scrollTo(0, 0);")
            d.set_window_size(*SMALL_WINDOW)  # the last tile or sentinel leaves the view…
            time.sleep(0.2)
            d.execute_script(NUDGE_JS, self.tile_selector)  # …and comes back into it
        return self._wait_for_more(read, self.load_timeout)

    def iter_photos(
        self,
        taxon: Taxon,
        size: str = "medium",
        quality_grade: str | None = None,
        licenses: Sequence[str] | None = None,
    ) -> Iterator[PhotoItem]:
        """Photos of a taxon's grid, in page order, until the list's end or ``max_scrolls``
        rounds (or until the caller stops reading). ``quality_grade`` and ``licenses`` fill the
        page URL template."""
        from selenium.webdriver.common.by import By

        self._open(
            self.page_url.format(
                base=self.base_url.rstrip("/"),
                taxon_id=taxon.id,
                quality_grade=quality_grade or "any",
                licenses=",".join(licenses or []),
            )
        )
        seen: set[str] = set()
        read = 0
        for _ in range(self.max_scrolls):
            ended = self._ended()  # before reading: every tile there at the end gets read
            tiles = self.driver.find_elements(By.CSS_SELECTOR, self.tile_selector)
            for tile in tiles[read:]:
                url, obs_id = read_tile(self.driver, self.image_selector, tile)
                photo_id = photo_id_from_url(url or "")
                if not url or not photo_id or not obs_id or photo_id in seen:
                    continue
                seen.add(photo_id)
                yield PhotoItem(
                    photo_id=photo_id, observation_id=obs_id, taxon=taxon, url=sized_url(url, size)
                )
            read = len(tiles)
            if ended:
                return
            if not self._nudge(read):
                log.info(
                    "no new tiles after a round of nudges and %.0f s: the end of the list",
                    self.load_timeout,
                )
                return
