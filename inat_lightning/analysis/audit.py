"""Bias audit — measured, not eyeballed: does the model look at the species or at a spurious cue?

Two audits share one interface (:class:`Audit`); :func:`choose_audit` picks the first that
applies to the data, as pytorch-grad-cam's CAM methods share one base.

:class:`CueAudit`, for images whose manifest row has a cue box (the synthetic "fisherman"):

* **energy** — the share of Grad-CAM energy (predicted class; ``score="finer"``: that class
  against its closest look-alikes) inside the box, against the box's share of the image area
  (the energy-based pointing game);
* **counterfactual** — accuracy with the cue vs with the cue's box filled (inpainting, blur or
  the mean colour: :mod:`~inat_lightning.analysis.counterfactual`), against a **hole control**:
  the same photos with a box of the same size filled elsewhere. The accuracy lost beyond the
  control is the cue's (a model hurt by any hole is not called biased). Pasting the cue onto
  other species' photos gives the flip rate, overall and on the class's look-alike (what its
  photos become without the cue). Where the dataset generator exists (synthetic
  data), the photos are also redrawn without/with the cue, nothing else changed (``*_redrawn``);
* a **verdict** per class from the counterfactuals alone: "relies on the cue" when removing it
  costs at least ``min_drop`` accuracy beyond the hole control, or pasting it onto the class's
  look-alike turns at least ``min_flip`` of those photos into the class. Whether the CAM *shows*
  the cue (energy share at least ``min_lift`` times the box's area share) is said beside it:
  "relies on the cue — and the CAM does not show it" is the case where looking at overlays
  misleads a person.

:class:`FaithfulnessAudit`, without boxes (real scraped data), reports per class the CAM
faithfulness metrics of pytorch-grad-cam: the confidence change when the most relevant 20% of
pixels are removed (ROAD) and when the image is multiplied by its CAM.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from inat_lightning.analysis.counterfactual import (
    REMOVALS,
    control_box,
    lookalike,
    paste_box,
    remove_box,
)
from inat_lightning.analysis.discover import DiscoverConfig
from inat_lightning.analysis.gradcam import CamSetting, compute_cams, energy_in_box, untouched
from inat_lightning.analysis.infer import forward
from inat_lightning.analysis.results import CueAuditRow, FaithfulnessRow
from inat_lightning.analysis.tiles import cam_tile
from inat_lightning.data.dataset import DEFAULT_MAX_PIXELS, load_readable
from inat_lightning.data.manifest import Record
from inat_lightning.data.spec import InputSpec
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.data.transforms import denormalize
from inat_lightning.registry import Registry

log = logging.getLogger(__name__)
#: the verdict of a class whose counterfactuals say it relies on the cue
RELIES = "RELIES ON THE CUE"


@dataclass
class AuditConfig:
    """Thresholds and costs of the audit (the ``audit`` config node).

    Args:
        min_lift: energy share inside the cue box / the box's area share, from which a class
            "looks at the cue" (1 = no more than a uniform map would put there).
        min_drop: accuracy drop (cue removed, beyond the hole control) from which a class
            relies on the cue.
        min_flip: share of the look-alike's photos the pasted cue turns into the class, from
            which a class relies on the cue.
        min_images: fewest cued images of a class for a verdict.
        cam: how the cue audit's CAMs are made (the ``cam`` config node): its ``score`` says
            what they explain, the predicted ``class`` score or that class ``finer`` than its
            closest alternatives (Finer-CAM: what tells it from look-alikes). The faithfulness
            metrics always explain the class score they measure.
        max_per_class: images per class for the faithfulness metrics (they cost forward passes).
        max_classes: classes the faithfulness metrics cover (those with the most test images):
            bounded at any class count.
        batch_size: images per forward pass.
        removal: how the cue is removed from a photo: ``inpaint``, ``blur`` or ``mean`` (see
            :mod:`inat_lightning.analysis.counterfactual`).
        seed: where the hole control's boxes fall.
        gallery_size: photos in the gallery of those that depend most on the cue.
        discover: spurious-cue discovery on the test photos: ``auto`` (when they have no cue
            boxes), ``true`` or ``false``.
        discovery: its bounds and thresholds (:class:`~inat_lightning.analysis.discover.
            DiscoverConfig`).
    """

    min_lift: float = 1.5
    min_drop: float = 0.15
    min_flip: float = 0.5
    min_images: int = 5
    cam: CamSetting = field(default_factory=CamSetting)
    max_per_class: int = 20
    max_classes: int = 50
    batch_size: int = 32
    removal: str = "inpaint"
    seed: int = 0
    gallery_size: int = 8
    discover: str | bool = "auto"
    discovery: DiscoverConfig = field(default_factory=DiscoverConfig)

    def __post_init__(self) -> None:
        if self.removal not in REMOVALS:
            raise ValueError(f"removal={self.removal!r}: one of {REMOVALS}")
        if not isinstance(self.cam, CamSetting):
            raise ValueError(f"cam={self.cam!r:.80}: not a CamSetting")
        if self.discover not in (True, False, "auto"):
            raise ValueError(f"discover={self.discover!r}: one of auto, true, false")


def flip_rate(flips: dict[int, list[int]], c: int | None) -> float:
    """Mean flip of class ``c``'s pasted cues; ``None`` (the ``(all)`` row): of every class's."""
    pooled = flips.get(c, []) if c is not None else [f for v in flips.values() for f in v]
    return float(np.mean(pooled)) if pooled else 0.0


def _tensor(images: Sequence[Image.Image], spec: InputSpec) -> torch.Tensor:
    """The network inputs of ``images``, made as at test time (the checkpoint's eval transform)."""
    tf = spec.transform()
    return torch.stack([tf(img.convert("RGB")) for img in images])


class Audit(ABC):
    """One bias/faithfulness audit of a network on a split's records.

    Subclasses set ``kind`` (the key in ``metrics.json``), ``title`` and ``legend`` (the report's
    heading and column explanations), say whether they fit the data (:meth:`applies`) and
    compute one row per class (:meth:`run`)."""

    kind: str
    title: str
    legend: str

    def __init__(self, cfg: AuditConfig, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.cfg = cfg
        self.max_pixels = max_pixels
        self.skipped: list[str] = []  # paths of unreadable images, left out of the audit

    def readable(self, root: Path, records: Sequence[Record]) -> tuple[list[Record], list]:
        """The records whose image loads (inside the root, under the pixel limit, decodable),
        and those images; the others are logged and listed in :attr:`skipped`."""
        kept, images, skipped = load_readable(root, records, self.max_pixels)
        self.skipped += skipped
        return kept, images

    @staticmethod
    @abstractmethod
    def applies(records: Sequence[Record]) -> bool:
        """Whether this audit can run on these records."""

    def save_gallery(self, path: Path, style: str = "red") -> Path | None:
        """A PNG of the photos the audit found most telling, at ``path``; ``None`` when it has
        none (the default: an audit without examples)."""
        return None

    @abstractmethod
    def run(
        self,
        net: nn.Module,
        root: str | Path,
        records: Sequence[Record],
        class_names: Sequence[str],
        spec: InputSpec,
    ) -> list[CueAuditRow] | list[FaithfulnessRow]:
        """One typed row per class (see :mod:`inat_lightning.analysis.results`)."""


class CueAudit(Audit):
    """Energy in the cue box, counterfactual accuracy (with a hole control) and flip rate, and
    a verdict per class."""

    kind = "cue"
    title = "Bias audit: the spurious cue"
    legend = (
        "`energy_in_box`: share of the CAM's energy inside the cue's box (`cam.score`: of the "
        "predicted class's score, or `finer`: against its closest look-alikes); `box_area`: the "
        "box's share of the image; `energy_lift`: their ratio (1 = what a uniform map gives). "
        "`acc_cue_removed`: the same photos with the cue's box filled (`audit.removal`); "
        "`acc_hole_control`: with a box of the same size filled elsewhere on the photo; "
        "`acc_drop`: the accuracy lost to removing the cue *beyond* what the hole alone costs "
        "(`acc_hole_control - acc_cue_removed`), the verdict's measure. "
        "`flip_rate_cue_added`: how much pasting the cue onto other species' photos raises the "
        "share predicted as this class (with the cue minus without; `(all)`: every cue class's "
        "pasted cues together). `lookalike`: what the model takes the class's photos for once "
        "the cue is removed; `flip_rate_lookalike`: the flip rate on that species' photos alone. "
        "Columns ending in `_redrawn` (synthetic data): the same, with "
        "the photos redrawn by the generator "
        "without or with the cue (nothing else changed)."
    )

    def __init__(self, cfg: AuditConfig, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        super().__init__(cfg, max_pixels)
        self.examples: list[dict] = []  # the photos that depend most on the cue (gallery)

    @staticmethod
    def applies(records: Sequence[Record]) -> bool:
        return any(r.cue_box is not None for r in records)

    def run(
        self,
        net: nn.Module,
        root: str | Path,
        records: Sequence[Record],
        class_names: Sequence[str],
        spec: InputSpec,
    ) -> list[CueAuditRow]:
        """One row per class that has cued images, plus an ``(all)`` row (see the module doc)."""
        cfg = self.cfg
        root = Path(root)
        index = {n: i for i, n in enumerate(class_names)}
        cued = [r for r in records if r.cue_box is not None and r.taxon_name in index]
        cued, photos = self.readable(root, cued)
        if not cued:
            return []
        rng = np.random.default_rng(cfg.seed)
        boxes = [cue_box_in(r, img) for r, img in zip(cued, photos)]
        removed_photos = [remove_box(img, b, cfg.removal) for img, b in zip(photos, boxes)]
        control_photos = [
            remove_box(img, control_box(b, *img.size, rng), cfg.removal)
            for img, b in zip(photos, boxes)
        ]
        labels = np.array([index[r.taxon_name] for r in cued])
        clean = [r for r in records if r.cue_box is None and r.taxon_name in index]
        clean, originals = self.readable(root, clean)
        generator = SyntheticSpecies.from_root(root)
        with untouched(net):
            net.eval()
            x = _tensor(photos, spec)
            probs = forward(net, x, cfg.batch_size)
            preds = probs.argmax(1)
            cams = compute_cams(net, x, preds.tolist(), cfg.cam, cfg.batch_size)
            energy, area = box_energy(cams, photos, boxes, spec)
            removed_probs = forward(net, _tensor(removed_photos, spec), cfg.batch_size)
            control = forward(net, _tensor(control_photos, spec), cfg.batch_size)
            # the clean photos as they are: the "without" of both flip rates
            clean_preds = (
                forward(net, _tensor(originals, spec), cfg.batch_size).argmax(1) if clean else []
            )
            flips = self._flips(
                net, clean, originals, clean_preds, photos, boxes, labels, index, spec
            )
            redrawn = self._redrawn(net, generator, cued, clean, clean_preds, labels, index, spec)
            self._keep_examples(
                net,
                cued,
                photos,
                removed_photos,
                boxes,
                probs,
                removed_probs,
                class_names,
                spec,
            )
        predicted = (preds, removed_probs.argmax(1), control.argmax(1))
        return cue_rows(cfg, class_names, labels, predicted, (energy, area), flips, redrawn)

    def _flips(self, net, clean, originals, before, photos, boxes, labels, index, spec) -> dict:
        """Per cue class and per other species: for that species' clean photos, +1 when pasting
        a cue (taken from the cue class's cued photos, in turn) pulls the prediction to the cue
        class, -1 when it pushes it away, 0 otherwise."""
        flips: dict[int, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
        if not clean:
            return flips
        for c in sorted(set(labels.tolist())):
            sources = [i for i in range(len(labels)) if labels[i] == c]
            others = [i for i, r in enumerate(clean) if index[r.taxon_name] != c]
            if not others:
                continue
            pasted = [
                paste_box(
                    originals[i],
                    photos[sources[k % len(sources)]],
                    boxes[sources[k % len(sources)]],
                )[0]
                for k, i in enumerate(others)
            ]
            after = forward(net, _tensor(pasted, spec), self.cfg.batch_size).argmax(1)
            for a, i in zip(after, others):
                flips[c][index[clean[i].taxon_name]].append(int(a == c) - int(before[i] == c))
        return flips

    def _redrawn(self, net, generator, cued, clean, po, labels, index, spec):
        """With the dataset's generator: predictions on the cued photos redrawn without the cue,
        and per cue class the flip of clean photos redrawn with it; ``None`` without one."""
        if generator is None:
            return None
        redrawn = [generator.render(generator.sample_of(r.photo_id), cue=False)[0] for r in cued]
        removed = forward(net, _tensor(redrawn, spec), self.cfg.batch_size).argmax(1)
        flips: dict[int, list[int]] = defaultdict(list)
        if clean:
            added = [generator.render(generator.sample_of(r.photo_id), cue=True)[0] for r in clean]
            pa = forward(net, _tensor(added, spec), self.cfg.batch_size).argmax(1)
            for c in set(labels.tolist()):
                flips[c] = [
                    int(a == c) - int(o == c)
                    for r, a, o in zip(clean, pa, po)
                    if index[r.taxon_name] != c
                ]
        return removed, flips

    def _keep_examples(
        self, net, cued, photos, removed_photos, boxes, probs, removed_probs, class_names, spec
    ) -> None:
        """The ``gallery_size`` photos whose predicted class loses the most confidence when the
        cue is removed, with their CAMs before and after (for :meth:`save_gallery`)."""
        preds = probs.argmax(1)
        drop = probs[np.arange(len(preds)), preds] - removed_probs[np.arange(len(preds)), preds]
        chosen = np.argsort(-drop, kind="stable")[: self.cfg.gallery_size]
        if not len(chosen):
            return
        both = [photos[i] for i in chosen] + [removed_photos[i] for i in chosen]
        x = _tensor(both, spec)
        targets = [int(preds[i]) for i in chosen] * 2
        cfg = self.cfg
        cams = compute_cams(net, x, targets, cfg.cam, cfg.batch_size)
        for k, i in enumerate(chosen):
            p = int(preds[i])
            self.examples.append(
                {
                    "photos": (np.asarray(x_to_01(x[k])), np.asarray(x_to_01(x[k + len(chosen)]))),
                    "cams": (cams[k], cams[k + len(chosen)]),
                    "box": spec.box(boxes[i], photos[i].width, photos[i].height),
                    "captions": (
                        [f"{class_names[p]} {probs[i, p]:.0%}", f"true: {cued[i].taxon_name}"],
                        [
                            f"cue removed: {class_names[p]} {removed_probs[i, p]:.0%}",
                            f"drop {drop[i]:+.0%}",
                        ],
                    ),
                }
            )

    def save_gallery(self, path: Path, style: str = "red") -> Path | None:
        """The kept examples as one PNG (:func:`save_cue_gallery`)."""
        return save_cue_gallery(self.examples, path, style)


def cue_box_in(r: Record, img: Image.Image) -> tuple[float, float, float, float]:
    """The record's cue box in the loaded photo's pixels (the manifest's size may differ
    from the file's when a photo was resized after the boxes were made)."""
    x0, y0, x1, y1 = r.cue_box
    sx = img.width / r.width if r.width else 1.0
    sy = img.height / r.height if r.height else 1.0
    return (x0 * sx, y0 * sy, x1 * sx, y1 * sy)


def box_energy(cams, photos, boxes, spec: InputSpec) -> tuple[np.ndarray, np.ndarray]:
    """Each CAM's share of energy inside its photo's cue box, and the box's share of the
    image (both in the network input's pixels)."""
    energy, area = [], []
    for img, cam, box in zip(photos, cams, boxes):
        e, a = energy_in_box(cam, spec.box(box, img.width, img.height))
        energy.append(e)
        area.append(a)
    return np.array(energy), np.array(area)


def cue_rows(
    cfg: AuditConfig,
    class_names: Sequence[str],
    labels: np.ndarray,
    predicted: tuple[np.ndarray, np.ndarray, np.ndarray],
    energy_area: tuple[np.ndarray, np.ndarray],
    flips: dict,
    redrawn: tuple | None,
) -> list[CueAuditRow]:
    """One row per cue class and an ``(all)`` row from the measures of :meth:`CueAudit.run`
    (``predicted``: the predictions with the cue, with it removed, with the hole control),
    each with its verdict."""
    preds, removed, hole = predicted
    energy, area = energy_area
    index = {n: i for i, n in enumerate(class_names)}
    cue_classes = sorted(set(labels.tolist()))
    twins = {c: lookalike(removed[labels == c], c) for c in cue_classes}
    pooled = {c: [f for fs in flips.get(c, {}).values() for f in fs] for c in cue_classes}
    on_twin = {c: flips.get(c, {}).get(t, []) for c, t in twins.items() if t is not None}
    rows = []
    groups = {class_names[c]: labels == c for c in cue_classes}
    groups["(all)"] = np.ones(len(labels), bool)
    for name, mask in groups.items():
        n = int(mask.sum())
        e, a = float(np.mean(energy[mask])), float(np.mean(area[mask]))
        acc = float(np.mean(preds[mask] == labels[mask]))
        acc_removed = float(np.mean(removed[mask] == labels[mask]))
        acc_hole = float(np.mean(hole[mask] == labels[mask]))
        twin = twins[index[name]] if name in index else None
        row = CueAuditRow(
            class_=name,
            cued_images=n,
            energy_in_box=e,
            box_area=a,
            energy_lift=e / a if a else 0.0,
            acc_with_cue=acc,
            acc_cue_removed=acc_removed,
            acc_hole_control=acc_hole,
            acc_drop=acc_hole - acc_removed,
            flip_rate_cue_added=flip_rate(pooled, index.get(name)),
            lookalike=class_names[twin] if twin is not None else "",
            flip_rate_lookalike=flip_rate(on_twin, index.get(name)),
        )
        if redrawn is not None:
            removed_redrawn, flips_redrawn = redrawn
            row.acc_cue_redrawn = float(np.mean(removed_redrawn[mask] == labels[mask]))
            row.acc_drop_redrawn = acc - row.acc_cue_redrawn
            row.flip_rate_redrawn = flip_rate(flips_redrawn, index.get(name))
        row.verdict = verdict(row, cfg)
        rows.append(row)
    return rows


def save_cue_gallery(examples: list[dict], path: Path, style: str = "red") -> Path | None:
    """Examples kept by :meth:`CueAudit.run` as one PNG: per row, the photo (cue outlined)
    and its cue-removed version, each with the CAM of the predicted class overlaid."""
    if not examples:
        return None
    rows = []
    for ex in examples:
        tiles = []
        for photo, cam, lines, box in zip(
            ex["photos"], ex["cams"], ex["captions"], (ex["box"], None)
        ):
            tiles.append(np.asarray(cam_tile(photo, cam, lines, style, box=box)))
        rows.append(np.concatenate(tiles, axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
    return path


def x_to_01(x: torch.Tensor) -> torch.Tensor:
    """A normalised ``(3, H, W)`` image as ``(H, W, 3)`` in [0, 1]."""
    return denormalize(x).permute(1, 2, 0)


class FaithfulnessAudit(Audit):
    """CAM faithfulness per class (ROAD, CAM-multiplied confidence): data without cue boxes."""

    kind = "faithfulness"
    title = "CAM faithfulness (no cue boxes in this data)"
    legend = (
        "Confidence change of the predicted class when the CAM's most relevant pixels are "
        "removed (ROAD, 20 %) and when the image is multiplied by its CAM."
    )

    @staticmethod
    def applies(records: Sequence[Record]) -> bool:
        return True

    def run(
        self,
        net: nn.Module,
        root: str | Path,
        records: Sequence[Record],
        class_names: Sequence[str],
        spec: InputSpec,
    ) -> list[FaithfulnessRow]:
        """Per class, mean confidence change of the predicted class when the CAM's most relevant 20%
        of pixels are removed (ROAD; more negative = more faithful) and when the image is multiplied
        by its CAM (closer to 0 = the CAM keeps what matters)."""
        cfg = self.cfg
        root = Path(root)
        counts = Counter(r.taxon_name for r in records)
        covered = set(sorted(counts, key=lambda c: (-counts[c], c))[: cfg.max_classes])
        by_class: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            if r.taxon_name in covered and len(by_class[r.taxon_name]) < cfg.max_per_class:
                by_class[r.taxon_name].append(r)
        rows = []
        with untouched(net):
            net.eval()
            for name in class_names:
                recs, images = self.readable(root, by_class.get(name, []))
                if not recs:
                    continue
                x = _tensor(images, spec)
                preds = forward(net, x, cfg.batch_size).argmax(1)
                cams = compute_cams(
                    net, x, preds.tolist(), replace(cfg.cam, score="class"), cfg.batch_size
                )
                targets = [ClassifierOutputTarget(int(p)) for p in preds]
                road = ROADMostRelevantFirst(percentile=80)(x, cams, targets, net)
                mult = CamMultImageConfidenceChange()(x, cams, targets, net)
                rows.append(
                    FaithfulnessRow(
                        class_=name,
                        images=len(recs),
                        road_most_relevant_first=float(np.mean(road)),
                        cam_mult_confidence_change=float(np.mean(mult)),
                    )
                )
        return rows


#: the audits, in order of preference: the first that applies to the data runs (one you
#: register, or install under ``inat_lightning.audits``, comes after the built-ins)
AUDITS: Registry[type[Audit]] = Registry("bias audit", "audit", "audits")
AUDITS.register("cue", CueAudit)
AUDITS.register("faithfulness", FaithfulnessAudit)


def choose_audit(
    records: Sequence[Record], cfg: AuditConfig, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Audit:
    """The first audit of :data:`AUDITS` that applies to ``records``."""
    return next(a for _, a in AUDITS.items() if a.applies(records))(cfg, max_pixels)


def verdict(row: CueAuditRow, cfg: AuditConfig) -> str:
    if row.class_ == "(all)":
        return ""
    if row.cued_images < cfg.min_images:
        return f"too few cued images (< {cfg.min_images})"
    removal = row.acc_drop >= cfg.min_drop
    transplant = bool(row.lookalike) and row.flip_rate_lookalike >= cfg.min_flip
    shown = row.energy_lift >= cfg.min_lift
    if removal or transplant:
        return RELIES + ("" if shown else " — and the CAM does not show it")
    return "ignores the cue" + (" — though the CAM points at it" if shown else "")
