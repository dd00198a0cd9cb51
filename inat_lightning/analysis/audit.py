"""Bias audit — measured, not eyeballed: does the model look at the species or at a spurious cue?

Two audits share one interface (:class:`Audit`); :func:`choose_audit` picks the first that
applies to the data, as pytorch-grad-cam's CAM methods share one base.

:class:`CueAudit`, for images whose manifest row has a cue box (the synthetic "fisherman"):

* **energy** — the share of Grad-CAM energy (predicted class) inside the box, against the box's
  share of the image area (the energy-based pointing game);
* **counterfactual** — accuracy with the cue vs with the cue removed, on the same photos redrawn
  by the dataset generator, and how much *adding* the cue to other species' photos raises the
  share predicted as the cue's species (``flip_rate_cue_added``: with the cue minus without);
* a **verdict** per class: "relies on the cue" when the energy share is at least ``min_lift``
  times the box's area share and the accuracy drop is at least ``min_drop``.

:class:`FaithfulnessAudit`, without boxes (real scraped data), reports per class the CAM
faithfulness metrics of pytorch-grad-cam: the confidence change when the most relevant 20% of
pixels are removed (ROAD) and when the image is multiplied by its CAM.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.road import ROADMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn
from torchvision.transforms import v2

from inat_lightning.analysis.gradcam import compute_cams, energy_in_box, untouched
from inat_lightning.data.dataset import DEFAULT_MAX_PIXELS, load_rgb
from inat_lightning.data.manifest import Record
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger(__name__)


@dataclass
class AuditConfig:
    """Thresholds and costs of the audit (the ``audit`` config node).

    Args:
        min_lift: energy share inside the cue box / the box's area share, from which a class
            "looks at the cue" (1 = no more than a uniform map would put there).
        min_drop: accuracy drop (cue removed) from which a class "needs the cue".
        min_images: fewest cued images of a class for a verdict.
        method, target_layer: the CAM (see :mod:`inat_lightning.analysis.gradcam`).
        max_per_class: images per class for the faithfulness metrics (they cost forward passes).
        batch_size: images per forward pass.
    """

    min_lift: float = 1.5
    min_drop: float = 0.15
    min_images: int = 5
    method: str = "GradCAM"
    target_layer: str = "layer3"
    max_per_class: int = 20
    batch_size: int = 32


def _transform(image_size: int) -> v2.Compose:
    """Resize to a square without cropping, so box coordinates scale simply."""
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize((image_size, image_size), antialias=True),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


@torch.no_grad()
def _predict(net: nn.Module, x: torch.Tensor, batch_size: int) -> np.ndarray:
    device = next(net.parameters()).device
    return torch.cat(
        [
            net(x[i : i + batch_size].to(device)).argmax(1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    ).numpy()


def _tensor(images: Sequence[Image.Image], size: int) -> torch.Tensor:
    tf = _transform(size)
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
        kept, images = [], []
        real_root = Path(root).resolve()
        for r in records:
            try:
                images.append(load_rgb(real_root, r.path, self.max_pixels))
            except Exception as e:  # noqa: BLE001 - one bad file must not end the audit
                log.warning("audit: skipping unreadable image %s: %s", r.path, e)
                self.skipped.append(r.path)
                continue
            kept.append(r)
        return kept, images

    @staticmethod
    @abstractmethod
    def applies(records: Sequence[Record]) -> bool:
        """Whether this audit can run on these records."""

    @abstractmethod
    def run(
        self,
        net: nn.Module,
        root: str | Path,
        records: Sequence[Record],
        class_names: Sequence[str],
        image_size: int,
    ) -> list[dict]:
        """One row (a dict) per class."""


class CueAudit(Audit):
    """Energy in the cue box, counterfactual accuracy and flip rate, and a verdict per class."""

    kind = "cue"
    title = "Bias audit: the spurious cue"
    legend = (
        "`energy_in_box`: share of Grad-CAM energy inside the cue's box; `box_area`: the box's "
        "share of the image; `energy_lift`: their ratio (1 = what a uniform map gives). "
        "`acc_cue_removed`: the same photos redrawn without the cue. "
        "`flip_rate_cue_added`: how much adding the cue to other species' photos raises the "
        "share predicted as this class (with the cue minus without)."
    )

    @staticmethod
    def applies(records: Sequence[Record]) -> bool:
        return any(r.cue_box is not None for r in records)

    def run(
        self,
        net: nn.Module,
        root: str | Path,
        records: Sequence[Record],
        class_names: Sequence[str],
        image_size: int,
    ) -> list[dict]:
        """One row per class that has cued images, plus an ``(all)`` row (see the module doc)."""
        cfg = self.cfg
        root = Path(root)
        index = {n: i for i, n in enumerate(class_names)}
        cued = [r for r in records if r.cue_box is not None and r.taxon_name in index]
        cued, photos = self.readable(root, cued)
        if not cued:
            return []
        generator = SyntheticSpecies.from_root(root)
        with untouched(net):
            net.eval()
            x = _tensor(photos, image_size)
            labels = np.array([index[r.taxon_name] for r in cued])
            preds = _predict(net, x, cfg.batch_size)
            cams = compute_cams(
                net, x, preds.tolist(), cfg.method, cfg.target_layer, cfg.batch_size
            )
            energy, area = [], []
            for r, img, cam in zip(cued, photos, cams):
                sx, sy = image_size / img.width, image_size / img.height
                x0, y0, x1, y1 = r.cue_box
                e, a = energy_in_box(cam, (x0 * sx, y0 * sy, x1 * sx, y1 * sy))
                energy.append(e)
                area.append(a)
            removed = None
            flips: dict[int, list[int]] = defaultdict(list)
            if generator is not None:
                redrawn = [
                    generator.render(generator.sample_of(r.photo_id), cue=False)[0] for r in cued
                ]
                removed = _predict(net, _tensor(redrawn, image_size), cfg.batch_size)
                # the cue added to other species' photos: how often does it pull them to its class?
                cue_classes = set(labels.tolist())
                clean = [r for r in records if r.cue_box is None and r.taxon_name in index]
                clean, originals = self.readable(root, clean)
                if clean and cue_classes:
                    samples = [generator.sample_of(r.photo_id) for r in clean]
                    added = [generator.render(sample, cue=True)[0] for sample in samples]
                    pa = _predict(net, _tensor(added, image_size), cfg.batch_size)
                    po = _predict(net, _tensor(originals, image_size), cfg.batch_size)
                    for r, p_added, p_orig in zip(clean, pa, po):
                        for c in cue_classes:  # +1: the cue pulled it to c; -1: it pushed it away
                            if index[r.taxon_name] != c:
                                flips[c].append(int(p_added == c) - int(p_orig == c))

        rows = []
        groups = {class_names[c]: labels == c for c in sorted(set(labels.tolist()))}
        groups["(all)"] = np.ones(len(labels), bool)
        for name, mask in groups.items():
            n = int(mask.sum())
            row = {
                "class": name,
                "cued_images": n,
                "energy_in_box": float(np.mean(np.array(energy)[mask])) if n else 0.0,
                "box_area": float(np.mean(np.array(area)[mask])) if n else 0.0,
                "energy_lift": (
                    float(np.mean(np.array(energy)[mask]) / np.mean(np.array(area)[mask]))
                    if n
                    else 0.0
                ),
                "acc_with_cue": float(np.mean(preds[mask] == labels[mask])) if n else 0.0,
            }
            if removed is not None:
                row["acc_cue_removed"] = float(np.mean(removed[mask] == labels[mask])) if n else 0.0
                row["acc_drop"] = row["acc_with_cue"] - row["acc_cue_removed"]
                c = index.get(name)
                row["flip_rate_cue_added"] = (
                    float(np.mean(flips[c])) if c in flips and flips[c] else 0.0
                )
            row["verdict"] = verdict(row, cfg)
            rows.append(row)
        return rows


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
        image_size: int,
    ) -> list[dict]:
        """Per class, mean confidence change of the predicted class when the CAM's most relevant 20%
        of pixels are removed (ROAD; more negative = more faithful) and when the image is multiplied
        by its CAM (closer to 0 = the CAM keeps what matters)."""
        cfg = self.cfg
        root = Path(root)
        by_class: dict[str, list[Record]] = defaultdict(list)
        for r in records:
            if len(by_class[r.taxon_name]) < cfg.max_per_class:
                by_class[r.taxon_name].append(r)
        rows = []
        with untouched(net):
            net.eval()
            for name in class_names:
                recs, images = self.readable(root, by_class.get(name, []))
                if not recs:
                    continue
                x = _tensor(images, image_size)
                preds = _predict(net, x, cfg.batch_size)
                cams = compute_cams(
                    net, x, preds.tolist(), cfg.method, cfg.target_layer, cfg.batch_size
                )
                targets = [ClassifierOutputTarget(int(p)) for p in preds]
                road = ROADMostRelevantFirst(percentile=80)(x, cams, targets, net)
                mult = CamMultImageConfidenceChange()(x, cams, targets, net)
                rows.append(
                    {
                        "class": name,
                        "images": len(recs),
                        "road_most_relevant_first": float(np.mean(road)),
                        "cam_mult_confidence_change": float(np.mean(mult)),
                    }
                )
        return rows


#: in order of preference: the first that applies to the data runs
AUDITS: tuple[type[Audit], ...] = (CueAudit, FaithfulnessAudit)


def choose_audit(
    records: Sequence[Record], cfg: AuditConfig, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Audit:
    """The first audit of :data:`AUDITS` that applies to ``records``."""
    return next(a for a in AUDITS if a.applies(records))(cfg, max_pixels)


def verdict(row: dict, cfg: AuditConfig) -> str:
    if row["class"] == "(all)":
        return ""
    if row["cued_images"] < cfg.min_images:
        return f"too few cued images (< {cfg.min_images})"
    looks = row["energy_lift"] >= cfg.min_lift
    if "acc_drop" not in row:
        return (
            "looks at the cue (no counterfactuals to test reliance)" if looks else "ignores the cue"
        )
    needs = row["acc_drop"] >= cfg.min_drop
    if looks and needs:
        return "RELIES ON THE CUE"
    if looks or needs:
        return "partly uses the cue"
    return "ignores the cue"
