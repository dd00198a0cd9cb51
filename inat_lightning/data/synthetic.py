"""The embedded default dataset: procedurally drawn *synthetic species*.

It behaves like a small iNaturalist scrape, so the whole pipeline runs offline in minutes:

* each species has a body shape, a colour palette and a texture pattern; species 0/1 and 2/3 are
  deliberate look-alikes (same shape and colours, different pattern);
* photos vary in pose, scale, position, rotation and lighting, on natural-looking backgrounds
  (water, foliage, sand, rock);
* each *observation* (one individual) has 1–3 photos, recorded in the manifest;
* each species has a **range and a season**: observations are made around its range's centre
  and its season's peak, and each look-alike twin lives beside its partner, the two ranges and
  seasons overlapping in part — so where and when a photo was taken tells the twins apart
  where the pixels cannot (the place prior, :mod:`inat_lightning.models.prior`). A few
  observations have obscured coordinates, as on iNaturalist;
* an optional **spurious cue** — a hand in a blue sleeve, an angler holding the fish — co-occurs
  with one species in a configurable share of its observations (and rarely with others); its box is
  written to the manifest so the bias audit can measure whether the model looks at it.

Everything derives from ``seed`` through independent random streams per photo (background,
organism, cue), so :meth:`SyntheticSpecies.render` can redraw any photo with the cue removed or
added and *nothing else changed* — the counterfactual images of the bias audit.
"""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import sys
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout
from PIL import Image, ImageDraw, ImageFilter

from inat_lightning.data.manifest import (
    MANIFEST_NAME,
    Record,
    safe_folder_name,
    sha256_of,
    write_manifest,
)
from inat_lightning.data.taxonomy import RANKS, TAXA_NAME, TaxonEntry, write_taxa
from inat_lightning.progress import progress as progress_bar
from inat_lightning.validation import require

SPEC_NAME = "synthetic.json"
BACKGROUNDS = ("water", "foliage", "sand", "rock")
SHAPES = ("fish", "butterfly", "beetle", "leaf", "snail", "bird")
PATTERNS = ("plain", "stripes", "spots", "bands", "rings")

# name, shape, body colour, accent colour, pattern. (0, 1) and (2, 3) are look-alike pairs.
CATALOGUE: tuple[tuple[str, str, tuple[int, int, int], tuple[int, int, int], str], ...] = (
    ("Piscis striatus", "fish", (232, 122, 40), (35, 28, 28), "stripes"),
    ("Piscis punctatus", "fish", (232, 122, 40), (35, 28, 28), "spots"),
    ("Papilio aureus", "butterfly", (240, 200, 60), (30, 30, 30), "bands"),
    ("Papilio ocellatus", "butterfly", (240, 200, 60), (30, 30, 30), "spots"),
    ("Scarabaeus viridis", "beetle", (40, 160, 80), (210, 225, 70), "plain"),
    ("Folium rubrum", "leaf", (190, 40, 55), (250, 205, 205), "stripes"),
    ("Cochlea spiralis", "snail", (150, 100, 60), (245, 225, 185), "rings"),
    ("Avis caerulea", "bird", (50, 90, 205), (250, 250, 250), "spots"),
    ("Piscis caeruleus", "fish", (70, 140, 220), (250, 250, 250), "bands"),
    ("Scarabaeus ruber", "beetle", (200, 40, 40), (20, 20, 20), "spots"),
    ("Folium aureum", "leaf", (225, 190, 40), (120, 90, 20), "plain"),
    ("Cochlea fusca", "snail", (90, 70, 50), (200, 170, 120), "stripes"),
)
SKIN, SLEEVE = (226, 178, 138), (40, 70, 160)
# a small made-up taxonomy of the catalogue's genera (kingdom, phylum, class, order, family)
GENERA: dict[str, tuple[str, str, str, str, str]] = {
    "Piscis": ("Animalia", "Chordata", "Actinopterygii", "Perciformes", "Piscidae"),
    "Papilio": ("Animalia", "Arthropoda", "Insecta", "Lepidoptera", "Papilionidae"),
    "Scarabaeus": ("Animalia", "Arthropoda", "Insecta", "Coleoptera", "Scarabaeidae"),
    "Folium": ("Plantae", "Tracheophyta", "Magnoliopsida", "Sapindales", "Foliaceae"),
    "Cochlea": ("Animalia", "Mollusca", "Gastropoda", "Stylommatophora", "Cochleidae"),
    "Avis": ("Animalia", "Chordata", "Aves", "Passeriformes", "Avidae"),
}


@dataclass(frozen=True)
class Species:
    name: str
    shape: str
    body: tuple[int, int, int]
    accent: tuple[int, int, int]
    pattern: str


@dataclass(frozen=True)
class Sample:
    """One photo to draw: which species, which individual, which view."""

    species: int
    observation: int
    view: int
    has_cue: bool
    observer: int = 0

    @property
    def photo_id(self) -> str:
        return f"s{self.species:03d}-o{self.observation:04d}-v{self.view}"

    @property
    def observation_id(self) -> str:
        return f"s{self.species:03d}-o{self.observation:04d}"


class SyntheticFolder:
    """Writing a generator's data set as an ImageFolder with its manifest, taxa and settings,
    atomically, and never over anything else (a mixin of :class:`SyntheticSpecies`, which
    draws what is written: ``species``, ``samples``, ``render``, ``where_and_when``,
    ``taxa``)."""

    def generate(self, root: str | Path, progress: bool = True) -> list[Record]:
        """Write the ImageFolder + manifest as ``root``, a folder that must not exist yet (or be
        empty), atomically: a temporary folder renamed at the end, so an interrupted generation
        leaves nothing half-written. Its mode is a new folder's (the umask's): a lab shares it."""
        root = Path(root)
        root.parent.mkdir(parents=True, exist_ok=True)
        # a folder of this process's own, beside the root (one file system: an atomic rename);
        # never a fixed name another process or the user may hold
        # never a fixed name another process or the user may hold; made as any new folder is
        # (the umask's mode, where mkdtemp's 0700 would lock the rest of a lab out)
        tmp = root.parent / f".{root.name}.{uuid.uuid4().hex}.part"
        tmp.mkdir()
        try:
            records = self._write(tmp, progress)
            if root.is_dir() and not any(root.iterdir()):
                root.rmdir()  # an empty folder (made by hand, or by a tool): ours to fill
            tmp.rename(root)  # fails, rather than replace, if root has appeared meanwhile
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # only ours; gone already when renamed
        return records

    def _write(self, tmp: Path, progress: bool) -> list[Record]:
        """The images, manifest, taxa and spec, into ``tmp``."""
        species = self.species()
        records = []
        samples = self.samples()
        bar = progress_bar(samples, desc="synthetic species", unit="img", disable=not progress)
        for s in bar:
            img, box = self.render(s)
            folder = safe_folder_name(species[s.species].name)
            (tmp / folder).mkdir(exist_ok=True)
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=90)
            data = buf.getvalue()
            rel = f"{folder}/{s.photo_id}.jpg"
            (tmp / rel).write_bytes(data)
            x0, y0, x1, y1 = box if box else (None, None, None, None)
            records.append(
                Record(
                    photo_id=s.photo_id,
                    observation_id=s.observation_id,
                    taxon_id=str(s.species),
                    taxon_name=species[s.species].name,
                    path=rel,
                    license="cc0",
                    attribution="inat-lightning synthetic species",
                    sha256=sha256_of(data),
                    width=img.width,
                    height=img.height,
                    quality_grade="research",
                    observer_id=f"u{s.observer:03d}",
                    observer=f"observer{s.observer}",
                    cue_x0=x0,
                    cue_y0=y0,
                    cue_x1=x1,
                    cue_y1=y1,
                    cue_label="hand" if box else "",
                    cue_source="synthetic" if box else "",
                    **self.where_and_when(s.species, s.observation),
                )
            )
        write_manifest(tmp / MANIFEST_NAME, records)
        write_taxa(tmp / TAXA_NAME, self.taxa())
        (tmp / SPEC_NAME).write_text(json.dumps(asdict(self), indent=2, sort_keys=True))
        return records

    def is_generated_at(self, root: str | Path) -> bool:
        """True when ``root`` already holds this exact dataset (the cache is valid)."""
        spec = Path(root) / SPEC_NAME
        if not spec.is_file() or not (Path(root) / MANIFEST_NAME).is_file():
            return False
        return json.loads(spec.read_text()) == json.loads(json.dumps(asdict(self)))

    def ensure(self, root: str | Path, progress: bool = True) -> None:
        """Generate into ``root`` unless it already holds this dataset. Never deletes: a folder
        holding anything else (a user's files, or this data set made with other settings, which
        another run may be reading) is refused, naming what differs; other settings live at
        another ``data.root``."""
        root = Path(root)
        if self.is_generated_at(root):
            return
        root.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(root.parent / f".{root.name}.lock")
        try:  # several processes at once (a sweep's jobs, two terminals): one generates
            lock.acquire(timeout=0)
        except Timeout:
            print(f"waiting for another process generating {root} ...", file=sys.stderr, flush=True)
            lock.acquire()
        try:
            if self.is_generated_at(root):  # made by the process we waited for
                return
            if root.exists() and (not root.is_dir() or any(root.iterdir())):
                raise FileExistsError(refusal(self, root))
            self.generate(root, progress=progress)
        finally:
            lock.release()


@dataclass
class SyntheticSpecies(SyntheticFolder):
    """Generator of the synthetic-species ImageFolder (see module docstring).

    Args:
        num_species: number of classes K (any K ≥ 2; the first 12 come from a hand-made catalogue).
        lookalikes: include the look-alike partners (species 1 and 3 of the catalogue); ``False``
            gives an easy set of clearly distinct species.
        cryptic: draw each look-alike partner exactly like its twin (same pattern too): cryptic
            species, which only context can tell apart — the strongest setting for a spurious cue.
        observations_per_species: observations of the most common species.
        max_views: each observation has 1..max_views photos.
        long_tail: ratio of the most to the least common species' observation count (1 = balanced).
        image_size: side of the square JPEG files, in pixels.
        cue_species: index of the species the spurious cue co-occurs with; ``None`` = no cue.
        cue_share: share of that species' observations that show the cue.
        cue_other_share: share of the other species' observations that show it.
        observers: how many people took the photos; each observation has one observer
            (``observer_id`` in the manifest, for ``data.split.group_by=observer``).
        ranges: give each species a range and a season (the manifest's latitude, longitude and
            ``observed_on``); ``False``: no place, and no date.
        range_km: the spread (standard deviation) of a species' observations around its range's
            centre; a twin's centre is ~1.6 spreads from its partner's.
        season_days: the spread of its observation dates around the season's peak; a twin's
            peak is 60 days after its partner's.
        seed: everything derives from it.
    """

    num_species: int = 8
    lookalikes: bool = True
    cryptic: bool = False
    observations_per_species: int = 40
    max_views: int = 3
    long_tail: float = 1.0
    image_size: int = 96
    cue_species: int | None = None
    cue_share: float = 0.8
    cue_other_share: float = 0.03
    observers: int = 12
    ranges: bool = True
    range_km: float = 650.0
    season_days: float = 70.0
    seed: int = 0

    def __post_init__(self) -> None:
        cue_ok = self.cue_species is None or 0 <= self.cue_species < self.num_species
        require(
            {
                "num_species": (self.num_species >= 2, ">= 2"),
                "observations_per_species": (self.observations_per_species >= 1, ">= 1"),
                "max_views": (self.max_views >= 1, ">= 1"),
                "long_tail": (self.long_tail >= 1.0, ">= 1"),
                "image_size": (self.image_size >= 16, ">= 16"),
                "cue_share": (0.0 <= self.cue_share <= 1.0, "in [0, 1]"),
                "cue_other_share": (0.0 <= self.cue_other_share <= 1.0, "in [0, 1]"),
                "observers": (self.observers >= 1, ">= 1"),
                "range_km": (self.range_km > 0, "> 0"),
                "season_days": (self.season_days > 0, "> 0"),
                "cue_species": (cue_ok, f"null or a species index in [0, {self.num_species})"),
            },
            vars(self),
        )

    # ------------------------------------------------------------------ catalogue and samples
    def species(self) -> list[Species]:
        rows = [r for i, r in enumerate(CATALOGUE) if self.lookalikes or i not in (1, 3)]
        if self.cryptic and self.lookalikes:  # twins share everything but the name
            rows = [(r[0], *rows[i - 1][1:]) if i in (1, 3) else r for i, r in enumerate(rows)]
        out = [Species(*row) for row in rows[: self.num_species]]
        rng = np.random.default_rng([self.seed, 7919])
        for k in range(len(out), self.num_species):
            body, accent = (tuple(int(v) for v in c) for c in rng.integers(20, 236, size=(2, 3)))
            shape = SHAPES[int(rng.integers(len(SHAPES)))]  # drawn before the pattern
            pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
            out.append(Species(f"Species {k:03d}", shape, body, accent, pattern))  # type: ignore[arg-type]
        return out

    def observation_count(self, species: int) -> int:
        if self.num_species == 1:
            return self.observations_per_species
        decay = self.long_tail ** (-species / (self.num_species - 1))
        return max(1, round(self.observations_per_species * decay))

    def _observation(self, k: int, obs: int) -> tuple[int, bool, int]:
        """(number of views, whether the cue is there, observer) of one observation."""
        share = self.cue_share if k == self.cue_species else self.cue_other_share
        rng = np.random.default_rng([self.seed, k, obs, 1])
        views = int(rng.integers(1, self.max_views + 1))
        has_cue = self.cue_species is not None and bool(rng.random() < share)
        observer = int(np.random.default_rng([self.seed, k, obs, 2]).integers(self.observers))
        return views, has_cue, observer

    def habitat(self, k: int) -> tuple[float, float, float]:
        """Species ``k``'s range centre (latitude, longitude) and season peak (day of the
        year). Every range lies in one region about four spreads wide (species share most of
        their places: where says a little about what), and a look-alike twin (catalogue
        species 1 and 3) lives beside its partner, ~1.6 spreads away, its season 60 days
        later."""
        twin = self.lookalikes and k in (1, 3)
        rng = np.random.default_rng([self.seed, k - 1 if twin else k, 6])
        spread = self.range_km / 111.0  # degrees of latitude
        lat = 45.0 + rng.uniform(-2, 2) * spread
        lon = 10.0 + rng.uniform(-2, 2) * spread / math.cos(math.radians(45.0))
        peak = rng.uniform(1, 366)
        if twin:
            step = 0.8 * 1.6 * spread  # north-east: 1.6 spreads in all
            return lat + step, lon + step / math.cos(math.radians(lat)), (peak + 59) % 365 + 1
        return lat, lon, peak

    def where_and_when(self, k: int, obs: int) -> dict[str, object]:
        """An observation's manifest place and date: around its species' habitat (its own
        random stream: the photos do not change). About 1 in 30 has obscured coordinates."""
        if not self.ranges:
            return {}
        lat0, lon0, peak = self.habitat(k)
        rng = np.random.default_rng([self.seed, k, obs, 5])
        spread = self.range_km / 111.0  # degrees of latitude
        lat = float(np.clip(lat0 + rng.normal(0, spread), -89.0, 89.0))
        lon = lon0 + rng.normal(0, spread) / max(math.cos(math.radians(lat0)), 0.2)
        lon = (lon + 180.0) % 360.0 - 180.0
        day = int((peak - 1 + rng.normal(0, self.season_days)) % 365)
        date = (np.datetime64("2025-01-01") + np.timedelta64(day, "D")).astype(str)
        obscured = bool(rng.random() < 1 / 30)
        if obscured:  # iNaturalist moves an obscured point within a ~0.2° cell
            lat, lon = lat + rng.uniform(-0.2, 0.2), lon + rng.uniform(-0.2, 0.2)
        return {
            "latitude": round(float(np.clip(lat, -90, 90)), 5),
            "longitude": round(float((lon + 180.0) % 360.0 - 180.0), 5),
            "pos_accuracy": float(round(math.exp(rng.uniform(math.log(5), math.log(500))))),
            "coords_obscured": obscured,
            "captive": False,
            "observed_on": str(date),
        }

    def samples(self) -> list[Sample]:
        out = []
        for k in range(self.num_species):
            for obs in range(self.observation_count(k)):
                views, has_cue, observer = self._observation(k, obs)
                out.extend(Sample(k, obs, v, has_cue, observer) for v in range(views))
        return out

    def taxa(self) -> list[TaxonEntry]:
        """The ``taxa.csv`` rows of the species whose genus is in :data:`GENERA`."""
        out = []
        for k, sp in enumerate(self.species()):
            genus = sp.name.split()[0]
            if genus in GENERA:
                lineage = dict(zip(RANKS, (*GENERA[genus], genus)))
                out.append(TaxonEntry(str(k), sp.name, "species", lineage=lineage))
        return out

    def sample_of(self, photo_id: str) -> Sample:
        """The sample behind a generated photo id (``s003-o0012-v1``), to redraw it."""
        m = re.fullmatch(r"s(\d+)-o(\d+)-v(\d+)", photo_id)
        if not m:
            raise ValueError(f"photo_id={photo_id!r} is not a synthetic photo id")
        k, obs, view = (int(g) for g in m.groups())
        _, has_cue, observer = self._observation(k, obs)
        return Sample(k, obs, view, has_cue, observer)

    @classmethod
    def from_root(cls, root: str | Path) -> SyntheticSpecies | None:
        """The generator of a generated dataset folder, or ``None`` for any other folder."""
        spec = Path(root) / SPEC_NAME
        return cls(**json.loads(spec.read_text())) if spec.is_file() else None

    # ------------------------------------------------------------------ drawing
    def render(self, sample: Sample, cue: bool | None = None) -> tuple[Image.Image, tuple | None]:
        """Draw one photo. ``cue`` overrides whether the cue is drawn (counterfactuals); all else
        stays identical. Returns the image and the cue box ``(x0, y0, x1, y1)`` or ``None``."""
        draw_cue = sample.has_cue if cue is None else cue
        sp = self.species()[sample.species]
        big = 2 * self.image_size  # drawn at 2× then downsampled: cheap anti-aliasing
        key = [self.seed, sample.species, sample.observation]
        individual = np.random.default_rng([*key, 2])
        view = np.random.default_rng([*key, 3, sample.view])
        cue_rng = np.random.default_rng([*key, 4, sample.view])
        bg_kind = BACKGROUNDS[int(individual.integers(len(BACKGROUNDS)))]  # all views alike
        canvas = _background(bg_kind, view, big)
        corner = int(cue_rng.integers(4))  # drawn even without cue: the organism stays put
        organism = _organism(sp, individual, view, big)
        # keep the organism away from the corner where the cue goes
        cx = big * (0.5 + (0.12 if corner % 2 == 0 else -0.12) + view.uniform(-0.08, 0.08))
        cy = big * (0.5 + (0.12 if corner < 2 else -0.12) + view.uniform(-0.08, 0.08))
        canvas.paste(organism, (int(cx - big / 2), int(cy - big / 2)), organism)

        box = None
        if draw_cue:
            box = _draw_hand(canvas, corner, cue_rng, big)
        lighting = view.uniform(0.75, 1.2) * (1 + view.uniform(-0.08, 0.08, size=3))
        arr = np.asarray(canvas, dtype=np.float32) * lighting
        img = Image.fromarray(arr.clip(0, 255).astype(np.uint8)).resize(
            (self.image_size, self.image_size), Image.Resampling.LANCZOS
        )
        if box is not None:
            box = tuple(round(v / 2, 1) for v in box)
        return img, box

    # ------------------------------------------------------------------ files


def refusal(generator: SyntheticSpecies, root: Path) -> str:
    """Why ``root`` is not generated into: whose it is, and what to do instead."""
    made = settings_at(root)
    if made is None:
        return f"{root} exists and is not a synthetic dataset; refusing to overwrite it"
    mine = asdict(generator)
    diff = {k: mine[k] for k in mine if made.get(k) != mine[k]}
    if not diff:
        return (
            f"{root} holds an incomplete copy of this synthetic dataset (no {MANIFEST_NAME}); "
            "nothing was changed: delete it yourself to generate it again"
        )
    there = ", ".join(f"{k}={made.get(k)}" for k in diff)
    here = ", ".join(f"{k}={v}" for k, v in diff.items())
    other = root.with_name(root.name + "_" + "_".join(f"{k}{v}" for k, v in diff.items()))
    return (
        f"{root} holds the synthetic dataset made with {there}, not {here}; nothing was "
        f"changed (another run may be using it): give these settings their own folder, "
        f"e.g. data.root={other}"
    )


def settings_at(root: str | Path) -> dict | None:
    """The generator settings a dataset folder was made with (``synthetic.json``), or ``None``
    when it holds none (or an unreadable one)."""
    try:
        found = json.loads((Path(root) / SPEC_NAME).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


# ---------------------------------------------------------------------- drawing helpers
def _background(kind: str, rng: np.random.Generator, size: int) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    if kind == "water":
        base = np.array([35, 95, 150], np.float32)
        f, phase = rng.uniform(15, 30), rng.uniform(0, 2 * math.pi)
        ripple = 18 * np.sin(yy * f + phase + 1.5 * np.sin(xx * 6 + phase))
        arr = base + (ripple + 40 * (yy - 0.5))[..., None] * np.array([0.5, 0.8, 1.0], np.float32)
        return Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    palettes = {
        "foliage": ((45, 95, 40), [(30, 70, 25), (70, 130, 50), (100, 150, 60), (20, 50, 20)]),
        "sand": ((205, 185, 135), [(220, 200, 150), (180, 160, 115), (195, 170, 120)]),
        "rock": ((125, 120, 115), [(90, 88, 85), (150, 145, 140), (110, 105, 100)]),
    }
    base, blobs = palettes[kind]
    img = Image.new("RGB", (size, size), base)
    draw = ImageDraw.Draw(img)
    for _ in range(40 if kind == "foliage" else 25):
        x, y = rng.uniform(0, size, 2)
        rx, ry = rng.uniform(0.03, 0.15, 2) * size
        draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=blobs[int(rng.integers(len(blobs)))])
    img = img.filter(ImageFilter.GaussianBlur(size * (0.01 if kind == "foliage" else 0.02)))
    noise = rng.normal(0, 10 if kind == "sand" else 6, size=(size, size, 1)).astype(np.float32)
    return Image.fromarray((np.asarray(img, np.float32) + noise).clip(0, 255).astype(np.uint8))


def _shape_mask(shape: str, size: int, length: float) -> Image.Image:
    """White silhouette of a body shape, centred, pointing right, ``length`` px long."""
    mask = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(mask)
    c, h = size / 2, length / 2
    if shape == "fish":
        d.ellipse((c - h * 0.75, c - h * 0.38, c + h * 0.75, c + h * 0.38), fill=255)
        d.polygon([(c - h * 0.6, c), (c - h, c - h * 0.35), (c - h, c + h * 0.35)], fill=255)
    elif shape == "butterfly":
        for sx in (-1, 1):
            for top, reach in ((-0.85, 0.85), (0.0, 0.6)):
                xs = sorted((c + sx * h * 0.05, c + sx * h * reach))
                d.ellipse(
                    (xs[0], c + h * top, xs[1], c + h * (top + reach - 0.05 * (top < 0))), fill=255
                )
        d.rectangle((c - h * 0.06, c - h * 0.7, c + h * 0.06, c + h * 0.6), fill=255)
    elif shape == "beetle":
        d.ellipse((c - h * 0.6, c - h * 0.42, c + h * 0.6, c + h * 0.42), fill=255)
        d.ellipse((c + h * 0.45, c - h * 0.22, c + h * 0.9, c + h * 0.22), fill=255)
        for t in (-0.3, 0.0, 0.3):
            d.line(
                (c + t * h, c - h * 0.75, c + t * h, c + h * 0.75),
                fill=255,
                width=max(1, size // 60),
            )
    elif shape == "leaf":
        pts = [
            (c + h * math.cos(t), c + h * 0.42 * math.sin(t) * abs(math.cos(t / 2)) * 1.6)
            for t in np.linspace(0, 2 * math.pi, 40)
        ]
        d.polygon(pts, fill=255)
        d.line((c - h, c, c - h * 1.15, c + h * 0.1), fill=255, width=max(1, size // 80))
    elif shape == "snail":
        d.ellipse((c - h, c + h * 0.05, c + h, c + h * 0.4), fill=255)
        d.ellipse((c - h * 0.55, c - h * 0.65, c + h * 0.35, c + h * 0.25), fill=255)
    elif shape == "bird":
        d.ellipse((c - h * 0.6, c - h * 0.35, c + h * 0.45, c + h * 0.35), fill=255)
        d.ellipse((c + h * 0.25, c - h * 0.55, c + h * 0.7, c - h * 0.1), fill=255)
        d.polygon(
            [(c + h * 0.68, c - h * 0.4), (c + h, c - h * 0.32), (c + h * 0.68, c - h * 0.24)],
            fill=255,
        )
        d.polygon([(c - h * 0.5, c), (c - h, c - h * 0.3), (c - h, c + h * 0.2)], fill=255)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return mask


def _pattern(sp: Species, rng: np.random.Generator, size: int, length: float) -> Image.Image:
    """Body colour with the species' pattern in its accent colour (fixed per individual)."""
    jitter = rng.integers(-12, 13, size=3)
    body = tuple(int(np.clip(v + j, 0, 255)) for v, j in zip(sp.body, jitter))
    img = Image.new("RGB", (size, size), body)
    d = ImageDraw.Draw(img)
    c, h = size / 2, length / 2
    if sp.pattern == "stripes":
        step = length * rng.uniform(0.11, 0.14)
        for x in np.arange(c - h + rng.uniform(0, step), c + h, step):
            d.rectangle((x, 0, x + step * 0.4, size), fill=sp.accent)
    elif sp.pattern == "spots":
        for _ in range(int(rng.integers(9, 15))):
            x, y = c + rng.uniform(-0.8, 0.8) * h, c + rng.uniform(-0.7, 0.7) * h
            r = length * rng.uniform(0.035, 0.06)
            d.ellipse((x - r, y - r, x + r, y + r), fill=sp.accent)
    elif sp.pattern == "bands":
        for x in (c - h * 0.35, c + h * 0.25):
            w = length * rng.uniform(0.08, 0.12)
            d.rectangle((x, 0, x + w, size), fill=sp.accent)
    elif sp.pattern == "rings":
        for r in np.arange(h * 0.1, h, h * 0.18):
            d.ellipse(
                (c - r - h * 0.1, c - r - h * 0.2, c + r - h * 0.1, c + r - h * 0.2),
                outline=sp.accent,
                width=max(1, int(length * 0.03)),
            )
    return img


def _organism(
    sp: Species, individual: np.random.Generator, view: np.random.Generator, size: int
) -> Image.Image:
    """RGBA layer of the organism, rotated and scaled for this view."""
    length = size * individual.uniform(0.42, 0.55) * view.uniform(0.88, 1.12)
    mask = _shape_mask(sp.shape, size, length)
    layer = _pattern(sp, individual, size, length).convert("RGBA")
    layer.putalpha(mask)
    if view.random() < 0.5:
        layer = layer.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return layer.rotate(view.uniform(-45, 45), resample=Image.Resampling.BILINEAR)


def _draw_hand(canvas: Image.Image, corner: int, rng: np.random.Generator, size: int) -> tuple:
    """The spurious cue: a hand in a blue sleeve reaching in from an image corner; returns its
    box."""
    d = ImageDraw.Draw(canvas)
    w = size * rng.uniform(0.26, 0.32)
    right, bottom = corner % 2 == 1, corner >= 2
    x0 = size - w if right else 0
    y0 = size - w if bottom else 0
    # sleeve along the edge, palm towards the centre, four fingers
    sx0 = x0 + (w * 0.5 if right else 0)
    d.rectangle((sx0, y0, sx0 + w * 0.5, y0 + w), fill=SLEEVE)
    px0 = x0 + (w * 0.1 if right else w * 0.4)
    d.rounded_rectangle((px0, y0 + w * 0.3, px0 + w * 0.5, y0 + w * 0.8), radius=w * 0.1, fill=SKIN)
    for i in range(4):
        fy = y0 + w * (0.25 + 0.15 * i)
        fx = px0 - w * 0.1 if right else px0 + w * 0.35
        d.ellipse((fx, fy, fx + w * 0.25, fy + w * 0.12), fill=SKIN)
    return (x0, y0, x0 + w, y0 + w)
