"""A fake iNaturalist on 127.0.0.1 for offline tests and benchmarks.

It generates its own data in the shape of the real API v1 (observations with photos, per-photo
licenses and attributions; taxa), serves photo bytes (synthetic-species drawings, so a model can
learn from a scrape), and an infinite-scroll observation grid whose tiles JavaScript appends when
the page is scrolled to the bottom, after a loading delay — the markup real scrapers target
(``.thumbnail a.img`` with a ``background-image``, or an ``<img>``, and ``href=/observations/<id>``).

Faults are scripted per photo id (a list of behaviours, one per request, then normal service)
and per API request number (``api_faults``), as hostile as a real network:

* transport: ``"drop"`` (full ``Content-Length``, half the body, connection closed),
  ``"reset"`` (connection closed before any header), ``"timeout"`` (a stall past the client's
  timeout);
* status: ``"500"``, ``"502"``, ``"503"``, ``"504"``, ``"404"`` (permanent), ``"429"`` with
  ``Retry-After`` in seconds, ``"429date"`` with it as an HTTP date;
* content: ``"truncate"`` (an honest length, a cut image), ``"html"`` (an HTML page with 200),
  ``"ctype"`` (image bytes labelled ``application/json``), ``"big"`` (2 MB), ``"bomb"`` (a tiny
  PNG whose header announces 30,000 × 30,000 pixels);
* redirects: ``"foreign"`` (to a host outside the allow-list), ``"loop"`` (to itself).

``bad_urls`` gives photos URLs that are not fetchable at all (``file://``, malformed), and
``api_429_every=N`` answers every Nth API request with 429. Every request is logged with its
arrival time, so tests check rate limits from the server side.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import sys
import threading
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from inat_lightning.data.synthetic import Sample, SyntheticSpecies
from inat_lightning.data.taxonomy import RANKS

LICENSES = ("cc-by", "cc-by-nc", "cc0", "cc-by-sa", None)  # None: all rights reserved
SIZES = {"square": 32, "small": 48, "medium": 64, "large": 80, "original": 96}
GRID_PAGE = 12  # tiles per scroll


@dataclass
class FakeObservation:
    id: int
    taxon_index: int
    photo_ids: list[int]
    quality_grade: str


@dataclass
class FakeINat:
    """Generated iNaturalist data + an HTTP server for it.

    Args:
        num_taxa: taxa (synthetic species; the first ones' names are the catalogue's).
        observations_per_taxon: observations per taxon.
        max_photos: photos per observation, 1..max_photos.
        faults: photo id → behaviours of its successive requests (see module docstring).
        api_429_every: every Nth API request gets 429 (0 = never).
        retry_after: the ``Retry-After`` seconds sent with 429.
        latency: seconds added to every response.
        scroll_delay_ms: grid loading delay after scrolling to the bottom.
        timeout_sleep: how long a ``"timeout"`` fault stalls.
        duplicates: photo id → another photo id whose bytes it serves (a re-uploaded photo).
        api_faults: API request number (1 = the first) → a fault for that request.
        page_faults: grid-page request number (1 = the first) → a fault for that request.
        bad_urls: photo id → the URL the API gives for it instead of a fetchable one.
        opendata: file name → bytes served at ``/opendata/<name>`` (an open-data export, see
            ``tests/fakeinat/opendata.py``).
        opendata_faults: open-data request number (1 = the first) → a fault for that request.
        captive_every: every Nth observation is of a captive/cultivated organism (0 = none).
    """

    num_taxa: int = 3
    observations_per_taxon: int = 10
    max_photos: int = 2
    faults: dict[int, list[str]] = field(default_factory=dict)
    api_429_every: int = 0
    retry_after: float = 1.0
    latency: float = 0.0
    scroll_delay_ms: int = 300
    timeout_sleep: float = 3.0
    duplicates: dict[int, int] = field(
        default_factory=dict
    )  # photo id → photo whose bytes it serves
    api_faults: dict[int, str] = field(default_factory=dict)
    page_faults: dict[int, str] = field(default_factory=dict)
    bad_urls: dict[int, str] = field(default_factory=dict)
    opendata: dict[str, bytes] = field(default_factory=dict)
    opendata_faults: dict[int, str] = field(default_factory=dict)
    captive_every: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        self.species = SyntheticSpecies(
            num_species=max(self.num_taxa, 2), image_size=96, seed=self.seed
        )
        lineage = {e.name: e.lineage for e in self.species.taxa()}
        self.ancestors = {}  # taxon id → the ``ancestors`` of its /v1/taxa/<id> answer
        self.taxa = []
        for k in range(self.num_taxa):
            name = self.species.species()[k].name
            chain = [
                {"id": 100 + 10 * k + i, "rank": rank, "name": lineage[name][rank]}
                for i, rank in enumerate(RANKS)
                if name in lineage
            ]
            ids = [48460, *(a["id"] for a in chain), 1000 + k]  # life first, itself last
            self.taxa.append({"id": 1000 + k, "name": name, "rank": "species", "ancestor_ids": ids})
            self.ancestors[1000 + k] = chain
        self.observations: list[FakeObservation] = []
        next_obs, next_photo = 5000, 90000
        for i in range(self.observations_per_taxon):  # interleave taxa, like real ids
            for k in range(self.num_taxa):
                n = 1 + (i + k) % self.max_photos
                ids = list(range(next_photo, next_photo + n))
                grade = "needs_id" if (i + k) % 7 == 6 else "research"
                self.observations.append(FakeObservation(next_obs, k, ids, grade))
                next_obs += 3
                next_photo += n
        self.photo_owner = {p: o for o in self.observations for p in o.photo_ids}
        self.requests: list[tuple[float, str, str]] = []  # (monotonic time, kind, path)
        self._attempts: dict[int, int] = defaultdict(int)
        self._api_count = 0
        self._page_count = 0
        self._opendata_count = 0
        self._lock = threading.Lock()
        self._cache: dict[tuple[int, str], bytes] = {}
        self.server: _QuietServer | None = None

    # ------------------------------------------------------------------ data in API shape
    def photo_license(self, photo_id: int) -> str | None:
        return LICENSES[photo_id % len(LICENSES)]

    def photo_json(self, photo_id: int) -> dict:
        code = self.photo_license(photo_id)
        rights = (
            "no rights reserved (CC0)"
            if code == "cc0"
            else (
                f"some rights reserved ({code.upper().replace('CC-', 'CC ')})"
                if code
                else "all rights reserved"
            )
        )
        return {
            "id": photo_id,
            "license_code": code,
            "url": self.bad_urls.get(
                photo_id, f"{self.base_url}/photos/{photo_id}/square.jpg?{photo_id % 997}"
            ),
            "attribution": f"(c) observer{photo_id % 13}, {rights}",
            "original_dimensions": {"width": 96, "height": 96},
            "flags": [],
        }

    def observation_json(self, obs: FakeObservation) -> dict:
        taxon = self.taxa[obs.taxon_index]
        photos = [self.photo_json(p) for p in obs.photo_ids]
        return {
            "id": obs.id,
            "uuid": f"00000000-0000-0000-0000-{obs.id:012d}",
            "quality_grade": obs.quality_grade,
            "license_code": "cc-by-nc",
            "uri": f"{self.base_url}/observations/{obs.id}",
            "taxon": {**taxon, "is_active": True, "rank_level": 10},
            "photos": photos,
            "observation_photos": [
                {"id": p["id"] + 1, "position": i, "photo": p} for i, p in enumerate(photos)
            ],
            "user": {"id": 700 + obs.id % 13, "login": f"observer{obs.id % 13}"},
            "observed_on": f"2024-{1 + obs.id % 12:02d}-{1 + obs.id % 28:02d}",
            **self.place_json(obs),
        }

    def place(self, obs: FakeObservation) -> tuple[float, float]:
        """The true (latitude, longitude) of an observation: around its taxon's range."""
        lat0, lon0, _ = self.species.habitat(obs.taxon_index)
        return round(lat0 + (obs.id % 17) / 4, 5), round(lon0 - (obs.id % 11) / 3, 5)

    def place_json(self, obs: FakeObservation) -> dict:
        """Where and how an observation is placed, as varied as the real API: geojson and
        location, location only, no place at all, obscured (geoprivacy), a point in the
        wrong order or out of range, accuracy missing or not a number; captive ones."""
        lat, lon = self.place(obs)
        kind = obs.id % 6
        found: dict = {
            "captive": bool(self.captive_every and obs.id % self.captive_every == 0),
            "obscured": False,
            "geoprivacy": None,
            "taxon_geoprivacy": None,
            "positional_accuracy": [12, None, 250, "about 5 m", 3, -4][obs.id % 6],
            "location": f"{lat},{lon}",
            "geojson": {"type": "Point", "coordinates": [lon, lat]},
        }
        if kind == 1:  # an older record: location only
            del found["geojson"]
        elif kind == 2:  # no place recorded
            found |= {"location": None, "geojson": None}
        elif kind == 3:  # obscured by the observer's geoprivacy
            found |= {"obscured": True, "geoprivacy": "obscured"}
        elif kind == 4:  # garbage: not a coordinate pair, latitude out of range
            found |= {"location": "north,east", "geojson": {"coordinates": ["x", 95.0]}}
        return found

    def search(self, query: dict[str, str]) -> dict:
        """``GET /v1/observations``: taxon, quality grade, photo license, id_above paging; or
        ``id=1,2,3``: those observations (an id the world lacks is left out)."""
        if query.get("id"):
            wanted = {int(i) for i in query["id"].split(",") if i.isdigit()}
            hits = [o for o in self.observations if o.id in wanted]
            results = [self.observation_json(o) for o in hits]
            return {"total_results": len(hits), "page": 1, "per_page": 200, "results": results}
        taxon_id = int(query.get("taxon_id", "0"))
        per_page = min(int(query.get("per_page", "30")), 200)
        id_above = int(query.get("id_above", "0"))
        grade = query.get("quality_grade")
        licenses = set(query["photo_license"].split(",")) if query.get("photo_license") else None
        hits = [
            o
            for o in self.observations
            if self.taxa[o.taxon_index]["id"] == taxon_id
            and o.id > id_above
            and (grade is None or o.quality_grade == grade)
            and (licenses is None or any(self.photo_license(p) in licenses for p in o.photo_ids))
        ]
        page = hits[:per_page]
        return {
            "total_results": len(hits),
            "page": 1,
            "per_page": per_page,
            "results": [self.observation_json(o) for o in page],
        }

    def taxa_search(self, q: str) -> dict:
        q = q.lower()
        genus = [
            {
                "id": 999,
                "name": q.split()[0].capitalize(),
                "rank": "genus",
                "matched_term": q.split()[0],
            }
        ]
        hits = [
            {**t, "matched_term": t["name"], "is_active": True}
            for t in self.taxa
            if q in t["name"].lower()
        ]
        results = genus + hits if q else hits  # a genus first, as the real search often answers
        return {"total_results": len(results), "page": 1, "per_page": 30, "results": results}

    def image_bytes(self, photo_id: int, size: str) -> bytes:
        photo_id = self.duplicates.get(photo_id, photo_id)
        key = (photo_id, size)
        if key not in self._cache:
            obs = self.photo_owner[photo_id]
            view = obs.photo_ids.index(photo_id)
            img, _ = self.species.render(Sample(obs.taxon_index, obs.id, view, False))
            img = img.resize((SIZES[size], SIZES[size]))
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=85)
            self._cache[key] = buf.getvalue()
        return self._cache[key]

    def expected_photos(
        self, licenses: set[str | None], grade: str | None = "research"
    ) -> dict[int, int]:
        """photo id → taxon index for every photo a complete API scrape should fetch."""
        return {
            p: o.taxon_index
            for o in self.observations
            if grade is None or o.quality_grade == grade
            for p in o.photo_ids
            if self.photo_license(p) in licenses
        }

    # ------------------------------------------------------------------ serving
    @property
    def base_url(self) -> str:
        assert self.server is not None, "start() the server first"
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeINat:
        self.server = _QuietServer(("127.0.0.1", 0), _handler(self))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()

    def __enter__(self) -> FakeINat:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def request_times(self, kind: str) -> list[float]:
        return [t for t, k, _ in self.requests if k == kind]

    def next_fault(self, photo_id: int) -> str | None:
        with self._lock:
            plan = self.faults.get(photo_id, [])
            n = self._attempts[photo_id]
            self._attempts[photo_id] += 1
        if plan and plan[-1] in ("404", "loop"):
            return plan[-1]  # for good, whatever the attempt
        return plan[n] if n < len(plan) else None


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that hung up (a timeout test) is expected: no traceback on stderr."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _handler(fake: FakeINat) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # keep test output clean
            pass

        def _send(
            self,
            status: int,
            body: bytes,
            ctype: str,
            headers: dict | None = None,
            declared: int | None = None,
        ) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(declared if declared is not None else len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            if declared is not None:
                self.close_connection = True

        def _fault(self, fault: str | None, body: bytes, ctype: str) -> bool:
            """Answer with ``fault`` (see the module doc); False when there is none to play."""
            if fault is None:
                return False
            if fault in ("500", "502", "503", "504", "404"):
                self._send(int(fault), b"<html>error</html>", "text/html")
            elif fault in ("429", "429date"):
                when = fake.retry_after
                value = (
                    f"{when:g}" if fault == "429" else formatdate(time.time() + when, usegmt=True)
                )
                self._send(429, b"slow down", "text/plain", {"Retry-After": value})
            elif fault == "timeout":
                time.sleep(fake.timeout_sleep)
                self._send(200, body, ctype)
            elif fault == "drop":  # the most common real fault: the connection dies mid-body
                self._send_partial(body, ctype)
            elif fault == "reset":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif fault == "truncate":
                self._send(200, body[: len(body) // 2], ctype)  # honest length, cut image
            elif fault == "html":
                self._send(200, b"<html><body>rate limited</body></html>", "text/html")
            elif fault == "ctype":
                self._send(200, body, "application/json")
            elif fault == "big":
                self._send(200, body + b"\0" * 2_000_000, ctype)
            elif fault == "bomb":
                self._send(200, png_bomb(), "image/png")
            elif fault == "foreign":
                self._send(302, b"", "text/plain", {"Location": "http://foreign.invalid/x.jpg"})
            elif fault == "loop":
                self._send(302, b"", "text/plain", {"Location": self.path})
            else:
                raise ValueError(f"unknown fault {fault!r}")
            return True

        def _send_partial(self, body: bytes, ctype: str) -> None:
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)

        def _json(self, data: dict, status: int = 200) -> None:
            self._send(status, json.dumps(data).encode(), "application/json")

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            url = urlparse(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            parts = [p for p in url.path.split("/") if p]
            kinds = {"v1": "api", "photos": "photo", "opendata": "opendata"}
            kind = kinds.get(parts[0] if parts else "", "page")
            with fake._lock:
                fake.requests.append((time.monotonic(), kind, self.path))
            if fake.latency:
                time.sleep(fake.latency)
            if kind == "api":
                self._api(parts[1:], query)
            elif kind == "opendata" and len(parts) == 2 and parts[1] in fake.opendata:
                with fake._lock:
                    fake._opendata_count += 1
                    fault = fake.opendata_faults.get(fake._opendata_count)
                body = fake.opendata[parts[1]]
                if not self._fault(fault, body, "application/gzip"):
                    self._send(200, body, "application/gzip")
            elif kind == "photo" and len(parts) == 3:
                self._photo(int(parts[1]), parts[2].split(".")[0])
            elif parts == ["observations"]:
                with fake._lock:
                    fake._page_count += 1
                    fault = fake.page_faults.get(fake._page_count)
                page = grid_page(
                    fake, int(query.get("taxon_id", "0")), query.get("trigger", "window")
                )
                if not self._fault(fault, page.encode(), "text/html"):
                    self._send(200, page.encode(), "text/html")
            else:
                self._json({"error": "not found"}, 404)

        def _api(self, parts: list[str], query: dict[str, str]) -> None:
            with fake._lock:
                fake._api_count += 1
                throttled = fake.api_429_every and fake._api_count % fake.api_429_every == 0
                fault = fake.api_faults.get(fake._api_count)
            if fault is not None:
                payload = json.dumps(self._api_answer(parts, query)).encode()
                self._fault(fault, payload, "application/json")
            elif throttled:
                self._send(
                    429,
                    b'{"error":"Too Many Requests"}',
                    "application/json",
                    {"Retry-After": f"{fake.retry_after:g}"},
                )
            else:
                answer = self._api_answer(parts, query)
                self._json(answer, 404 if "error" in answer else 200)

        def _api_answer(self, parts: list[str], query: dict[str, str]) -> dict:
            if parts == ["observations"]:
                return fake.search(query)
            if parts == ["taxa"]:
                return fake.taxa_search(query.get("q", ""))
            if len(parts) == 2 and parts[0] == "taxa" and parts[1].isdigit():
                hits = [
                    {**t, "ancestors": fake.ancestors[t["id"]]}
                    for t in fake.taxa
                    if t["id"] == int(parts[1])
                ]
                return {"total_results": len(hits), "page": 1, "per_page": 30, "results": hits}
            return {"error": "not found"}

        def _photo(self, photo_id: int, size: str) -> None:
            if photo_id not in fake.photo_owner or size not in SIZES:
                self._send(404, b"not found", "text/plain")
                return
            fault = fake.next_fault(photo_id)
            body = fake.image_bytes(photo_id, size)
            if not self._fault(fault, body, "image/jpeg"):
                self._send(200, body, "image/jpeg")

    return Handler


def png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1x1 PNG whose header (IHDR) claims ``width`` × ``height``: tiny on the wire,
    ~900 M pixels if a decoder believed it."""
    buf = io.BytesIO()
    from PIL import Image

    Image.new("L", (1, 1)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4 : ihdr + 12] = struct.pack(">II", width, height)
    crc = zlib.crc32(bytes(data[ihdr : ihdr + 17])) & 0xFFFFFFFF
    data[ihdr + 17 : ihdr + 21] = struct.pack(">I", crc)
    return bytes(data)


TRIGGERS = ("window", "inner", "sentinel", "last", "button", "keys")
#: what each trigger variant listens to, to load the next batch of tiles
_TRIGGER_JS = {
    "window": """window.addEventListener('scroll', () => {
  if (window.innerHeight + window.scrollY >= document.body.scrollHeight - 50) more(); });""",
    "inner": """const box = document.getElementById('scroller');
box.addEventListener('scroll', () => {
  if (box.scrollTop + box.clientHeight >= box.scrollHeight - 50) more(); });""",
    "sentinel": """new IntersectionObserver(es => { if (es.some(e => e.isIntersecting)) more(); })
  .observe(document.getElementById('sentinel'));""",
    "last": """const io = new IntersectionObserver(es => { if (es.some(e => e.isIntersecting)) more(); });
afterBatch = () => { io.disconnect(); const t = document.querySelector('#grid .thumbnail:last-child'); if (t) io.observe(t); };""",
    "button": """document.querySelector('button.load-more').addEventListener('click', () => more());""",
    "keys": """document.addEventListener('keydown', e => { if (e.key === 'End' || e.key === 'PageDown') more(); });""",
}


def grid_page(fake: FakeINat, taxon_id: int, trigger: str = "window") -> str:
    """The observation grid: tiles appended by JavaScript, after a delay, when ``trigger``
    fires (see :data:`TRIGGERS`): a scroll listener on the window or on an inner scroll box, an
    IntersectionObserver on a sentinel or on the last tile, a "Load more" button, or the End /
    PageDown keys. Tiles wrap in rows, so a batch fits a tall window: the page cannot scroll."""
    if trigger not in _TRIGGER_JS:
        raise ValueError(f"trigger={trigger!r}: one of {TRIGGERS}")
    inner = trigger == "inner"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Observations</title>
<style>#grid{{display:flex;flex-wrap:wrap}} .thumbnail{{display:block;width:180px;height:220px;margin:6px}}
a.img{{display:block;width:180px;height:180px;background-size:cover}} a.img img{{width:180px;height:180px}}
#loading{{display:none}} #scroller{{height:{"700px" if inner else "auto"};overflow-y:{"auto" if inner else "visible"}}}</style></head><body>
<div id="scroller"><div id="grid" class="observations grid"></div><div id="sentinel" style="height:2px"></div></div>
<div id="loading">Loading…</div><button class="load-more" type="button">Load more</button>
<script>
const TAXON = {taxon_id}, DELAY = {fake.scroll_delay_ms}, PER = {GRID_PAGE};
let lastId = 0, busy = false, done = false, n = 0, afterBatch = () => {{}};
function tile(o) {{
  const p = o.photos[0], url = p.url.replace('/square.', '/medium.');
  const cell = document.createElement('div'); cell.className = 'thumbnail';
  const a = document.createElement('a'); a.className = 'img'; a.href = '/observations/' + o.id;
  if (n++ % 3 === 2) {{ const img = document.createElement('img'); img.src = url; a.appendChild(img); }}
  else {{ a.style.backgroundImage = 'url("' + url + '")'; }}
  const name = document.createElement('a'); name.className = 'display-name sciname';
  name.href = '/taxa/' + o.taxon.id; name.textContent = o.taxon.name;
  cell.appendChild(a); cell.appendChild(name); document.getElementById('grid').appendChild(cell);
}}
async function more() {{
  if (busy || done) return; busy = true;
  document.getElementById('loading').style.display = 'block';
  await new Promise(r => setTimeout(r, lastId ? DELAY : 0));
  const r = await fetch(`/v1/observations?taxon_id=${{TAXON}}&photos=true&order_by=id&order=asc&per_page=${{PER}}&id_above=${{lastId}}`);
  const data = await r.json();
  data.results.forEach(tile);
  if (data.results.length) lastId = data.results[data.results.length - 1].id;
  if (data.results.length < PER) {{ done = true; document.getElementById('grid').dataset.end = 'true'; }}
  document.getElementById('loading').style.display = 'none'; busy = false; afterBatch();
}}
{_TRIGGER_JS[trigger]}
more();
</script></body></html>"""


def main() -> None:
    """Serve from a process of its own (benchmarks: no GIL shared with the client). Prints the base
    URL, serves until SIGTERM/SIGINT, then writes the request log (time, kind, path) as JSON."""
    import argparse
    import signal

    ap = argparse.ArgumentParser()
    ap.add_argument("--taxa", type=int, default=2)
    ap.add_argument("--observations", type=int, default=50)
    ap.add_argument("--max-photos", type=int, default=2)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--log", required=True)
    a = ap.parse_args()
    fake = FakeINat(
        num_taxa=a.taxa,
        observations_per_taxon=a.observations,
        max_photos=a.max_photos,
        latency=a.latency,
    )
    for p in fake.photo_owner:  # render up front: requests then cost only the network
        fake.image_bytes(p, "medium")
    fake.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(fake.base_url, flush=True)
    stop.wait()
    fake.stop()
    Path(a.log).write_text(json.dumps(fake.requests))


if __name__ == "__main__":
    main()
