"""Spurious-cue discovery: find a cue nobody boxed, with the model's own CAMs and features.

The cue audit (:mod:`~inat_lightning.analysis.audit`) measures a cue someone suspected and
boxed. Here nobody did:

1. **proposals** — per photo, up to ``proposals_per_photo`` regions where the CAM of the
   photo's own class (its label, not the prediction: which cluster a photo falls into must not
   depend on whether the model got it right, or step 4's presence gap would be biased)
   concentrates (the connected region above ``cam_threshold`` of each peak in
   turn, its side bounded);
2. **descriptions** — each region by the model's own activations there (the CAM layer's,
   ROI-aligned, L2-normalised) and where it sits in the photo;
3. **clusters** — HDBSCAN (scikit-learn) over the descriptions: a recurring object, the same
   hand, ring or watermark on many photos, forms one cluster; a region seen once is noise;
4. **evidence** — per cluster, the class it is over-represented in (the share of that class's
   photos it holds against the share of the others'), the **presence gap** (the accuracy on
   that class's photos that show the region against those that do not: a model that ignores a
   region is as right without it), the accuracy that class loses when the
   region is removed *beyond* a same-size hole elsewhere (the audit's hole control), and the
   transplant: the region pasted onto photos of the class's closest look-alike, how many flip;
5. a **ranking** and a verdict (``SUSPECTED SHORTCUT``) whose thresholds are config keys.

Bounded at any scale: at most ``max_classes`` classes (the most photographed first) and
``max_photos_per_class`` photos each are examined, and counterfactuals are run for at most
``max_clusters`` candidates; memory grows with the photos examined, nothing is per class pair.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy import ndimage
from scipy.stats import fisher_exact
from sklearn.cluster import HDBSCAN
from sklearn.metrics import roc_auc_score
from torch import nn
from torchvision.ops import roi_align

from inat_lightning.analysis import counterfactual as cf
from inat_lightning.analysis.gradcam import CamSetting, compute_cams, resolve_layer, untouched
from inat_lightning.analysis.infer import forward
from inat_lightning.analysis.occlusion import Box, Refinement, area, finer_boxes
from inat_lightning.analysis.tables import write_csv
from inat_lightning.analysis.tiles import cam_tile, caption_tile
from inat_lightning.data.spec import InputSpec
from inat_lightning.data.transforms import denormalize
from inat_lightning.validation import require, require_numbers

log = logging.getLogger(__name__)

#: the verdict of a cluster whose region a class is suspected to be told by
SUSPECTED = "SUSPECTED SHORTCUT"


@dataclass
class DiscoverConfig:
    """Bounds and thresholds of discovery (the ``audit.discovery`` config node).

    Args:
        proposals_per_photo: regions taken from each photo's CAM.
        cam_threshold: a region is the connected part of the CAM above this share of its peak.
        min_box: a region's side at least, as a share of the input's side.
        max_box: a region's side at most, as a share of the input's side.
        max_classes: classes examined (the most photographed first).
        max_photos_per_class: photos examined per class.
        min_cluster_photos: fewest photos a cluster needs (HDBSCAN's ``min_cluster_size``).
        max_clusters: candidates (a cluster's photos of one class) given the counterfactual
            tests: those that pass :func:`gates` first, the largest presence gap first.
        min_share_in_class: share of its class's photos a suspected cluster holds at least.
        min_over_representation: that share against the share of other classes' photos.
        min_gap: presence gap (accuracy on the class's photos in the cluster minus on those
            not in it) a suspected cluster shows at least: a region the class is told by on the
            photos that show it, and missed on those that do not. The species itself is on
            every photo of its class, so its regions show no gap.
        max_presence_p: the presence gap's one-sided p-value (:func:`presence_p`) at most: a
            gap on a photo or two is chance.
        min_drop: accuracy drop (region removed, beyond the hole control) that is evidence.
        min_flip: share of the look-alike's photos the pasted region turns into the class that
            is evidence (either is enough, with the over-representation).
        min_separation: how well the cluster's look, searched for anywhere in each photo
            (:func:`look_scores`), tells the photos its regions were found on from the
            look-alike's photos (:func:`separation`, a ROC AUC) at least. A shortcut is
            something the class's photos show and the look-alike's do not; a part of the species
            both show (twins drawn alike) is not one, even where the CAM of the class's label
            follows the model's guess between them.
        position_weight: weight of where a region sits beside what it looks like.
        removal: how a region is removed (:data:`~inat_lightning.analysis.counterfactual.REMOVALS`).
        refine_grid: the written boxes are drawn finer than the CAM by occluding this many
            rows and columns around each suspected region (:meth:`Discovery.refine`); 0: as
            the CAM draws them.
        refine_keep: a row (column) is in the fine box when its occlusion costs this share of
            the costliest row's (column's).
        refine_hold: the fine box is kept when occluding it costs this share of what occluding
            the CAM's region costs.
        seed: where the hole control's boxes fall.
        batch_size: photos per forward pass.
    """

    proposals_per_photo: int = 2
    cam_threshold: float = 0.5
    min_box: float = 0.08
    max_box: float = 0.5
    max_classes: int = 30
    max_photos_per_class: int = 40
    min_cluster_photos: int = 5
    max_clusters: int = 12
    min_share_in_class: float = 0.15
    min_over_representation: float = 1.5
    min_gap: float = 0.2
    max_presence_p: float = 0.05
    min_drop: float = 0.15
    min_flip: float = 0.5
    min_separation: float = 0.7
    position_weight: float = 0.5
    removal: str = "inpaint"
    refine_grid: int = 8
    refine_keep: float = 0.5
    refine_hold: float = 0.9
    seed: int = 0
    batch_size: int = 32
    cam: CamSetting = field(default_factory=CamSetting)

    def __post_init__(self) -> None:
        ints = ("proposals_per_photo", "max_classes", "max_photos_per_class")
        ints += ("min_cluster_photos", "max_clusters", "refine_grid", "seed", "batch_size")
        floats = ("cam_threshold", "min_box", "max_box", "min_share_in_class")
        floats += ("min_over_representation", "min_gap", "min_drop", "min_flip", "position_weight")
        floats += ("min_separation", "max_presence_p")
        floats += ("refine_keep", "refine_hold")
        v = self.__dict__
        require_numbers(v, ints, floats)
        require(
            {
                **{k: (v[k] >= 1, ">= 1") for k in ints if k not in ("seed", "refine_grid")},
                "refine_grid": (
                    v["refine_grid"] == 0 or v["refine_grid"] >= 3,
                    "0 (boxes as the CAM draws them) or >= 3 (fewer strips are no finer)",
                ),
                "refine_keep": (0 < v["refine_keep"] <= 1, "in (0, 1]"),
                "refine_hold": (0 < v["refine_hold"] <= 1, "in (0, 1]"),
                "min_separation": (0 <= v["min_separation"] <= 1, "in [0, 1] (a ROC AUC)"),
                "max_presence_p": (0 < v["max_presence_p"] <= 1, "in (0, 1] (a p-value)"),
                "min_cluster_photos": (v["min_cluster_photos"] >= 2, ">= 2"),
                "cam_threshold": (0 < v["cam_threshold"] < 1, "in (0, 1)"),
                "min_box": (0 < v["min_box"] <= v["max_box"], "in (0, max_box]"),
                "max_box": (0 < v["max_box"] <= 1, "in (0, 1]"),
                "removal": (v["removal"] in cf.REMOVALS, f"one of {cf.REMOVALS}"),
            },
            v,
        )


@dataclass
class Proposal:
    """One region of one photo: ``photo`` indexes the photos examined, ``box`` is in the
    network input's pixels."""

    photo: int
    box: Box
    fine: Box | None = None  # the box written out (:func:`occlusion_box`), when refined


@dataclass
class DiscoveredCue:
    """One cluster of regions and its evidence (a row of ``discovered_cues.csv``)."""

    rank: int
    class_: str
    cluster: int
    photos: int
    share_in_class: float
    share_elsewhere: float
    over_representation: float  # share_in_class / share_elsewhere (floored at 1 / photos)
    presence_gap: float | None  # accuracy on the class's photos in the cluster minus the rest's
    acc_drop: float | None
    transplant_flip: float | None
    lookalike: str
    verdict: str
    members: list[Proposal] = field(default_factory=list, repr=False)
    look_separation: float | None = None  # ROC AUC: its look, its photos vs the look-alike's
    presence_p: float | None = None  # one-sided p-value of the presence gap


def first_regions(members: Sequence[Proposal]) -> list[Proposal]:
    """Each photo's first region among ``members``, in their order: the one a cue's
    counterfactuals, finer box, written box and gallery all use."""
    first: dict[int, Proposal] = {}
    for p in members:
        first.setdefault(p.photo, p)
    return list(first.values())


def cam_regions(cam: np.ndarray, k: int, threshold: float, min_side: int, max_side: int) -> list:
    """Up to ``k`` boxes where ``cam`` (``H × W``) concentrates: around its peak, the connected
    region above ``threshold`` of the peak, its sides bounded to ``[min_side, max_side]`` around
    the peak; that region is then suppressed and the next peak taken."""
    work = np.array(cam, dtype=np.float32, copy=True)
    height, width = work.shape
    boxes: list[Box] = []
    for _ in range(k):
        peak = float(work.max())
        if peak <= 0:
            break
        py, px = np.unravel_index(int(work.argmax()), work.shape)
        labels, _ = ndimage.label(work >= threshold * peak)
        ys, xs = np.nonzero(labels == labels[py, px])
        x0, x1 = _bounded(int(xs.min()), int(xs.max()) + 1, int(px), min_side, max_side, width)
        y0, y1 = _bounded(int(ys.min()), int(ys.max()) + 1, int(py), min_side, max_side, height)
        boxes.append((float(x0), float(y0), float(x1), float(y1)))
        work[ys, xs] = 0
        work[y0:y1, x0:x1] = 0
    return boxes


def _bounded(lo: int, hi: int, peak: int, min_side: int, max_side: int, limit: int) -> tuple:
    """``[lo, hi)`` grown to ``min_side`` or cut to ``max_side`` around ``peak``, in
    ``[0, limit)``."""
    side = min(max(hi - lo, min_side), max_side, limit)
    if hi - lo != side:
        lo = peak - side // 2
    lo = max(0, min(lo, limit - side))
    return lo, lo + side


def with_maps(net: nn.Module, x: torch.Tensor, cfg: DiscoverConfig) -> tuple:
    """The softmax outputs ``(N, K)`` and, from the same forward pass, the CAM layer's
    activations ``(N, C, h, w)`` of each photo."""
    layer = resolve_layer(net, cfg.cam.target_layer)
    found: list[torch.Tensor] = []
    hook = layer.register_forward_hook(lambda _m, _i, out: found.append(out.detach().cpu()))
    try:
        with torch.no_grad():
            probs = forward(net, x, cfg.batch_size)
    finally:
        hook.remove()
    return probs, torch.cat(found)


def region_looks(maps: torch.Tensor, proposals: Sequence[Proposal], side: int) -> torch.Tensor:
    """``(M, C)``: the activations averaged inside each proposal's box (ROI-aligned, boxes in
    the ``side``-pixel input), L2-normalised."""
    rois = torch.tensor([[p.photo, *p.box] for p in proposals], dtype=torch.float32)
    pooled = roi_align(maps, rois, (2, 2), spatial_scale=maps.shape[-1] / side, aligned=True)
    return torch.nn.functional.normalize(pooled.mean((2, 3)), dim=1)


def describe(maps: torch.Tensor, proposals: Sequence[Proposal], side: int, weight: float):
    """``(M, C + 3)`` descriptions of the proposals: :func:`region_looks`, then the distance of
    the box's centre from the photo's and its size (shares of the input side) times
    ``weight``."""
    looks = region_looks(maps, proposals, side).numpy()
    boxes = np.array([p.box for p in proposals], dtype=np.float32) / side
    centre = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    where = np.stack(
        [
            np.linalg.norm(centre - 0.5, axis=1),
            boxes[:, 2] - boxes[:, 0],
            boxes[:, 3] - boxes[:, 1],
        ],
        1,
    )  # how far from the centre, not which corner: a hand held in any corner is one cue
    return np.concatenate([looks, weight * where], 1).astype(np.float32)


def look_scores(
    maps: torch.Tensor, members: Sequence[Proposal], side: int, photos: Sequence[int]
) -> np.ndarray:
    """Per photo in ``photos`` (indices into ``maps``), how much its most alike window looks like
    the cluster: the cosine of the activations averaged over each window the size of the
    members' median box against the members' mean look — a member photo's own regions left out
    of that mean, so that it is scored as any other photo is. It finds the look wherever it is,
    whatever the CAM of the photo's label shows (that CAM follows the model's guess)."""
    looks = region_looks(maps, members, side)
    owner = torch.tensor([p.photo for p in members])
    chosen = torch.as_tensor(list(photos), dtype=torch.long)
    own = torch.stack([looks[owner == i].sum(0) for i in chosen.tolist()])
    centres = torch.nn.functional.normalize(looks.sum(0) - own, dim=1)
    boxes = np.array([p.box for p in members], dtype=np.float32) * maps.shape[-1] / side
    kh = int(min(maps.shape[-2], max(1, round(float(np.median(boxes[:, 3] - boxes[:, 1]))))))
    kw = int(min(maps.shape[-1], max(1, round(float(np.median(boxes[:, 2] - boxes[:, 0]))))))
    windows = torch.nn.functional.avg_pool2d(maps[chosen], (kh, kw), stride=1)
    windows = torch.nn.functional.normalize(windows, dim=1)
    return torch.einsum("nchw,nc->nhw", windows, centres).flatten(1).max(1).values.numpy()


def separation(with_region: np.ndarray, lookalike: np.ndarray) -> float | None:
    """How well the :func:`look_scores` of the photos a cluster's regions were found on tell
    them from the look-alike's photos: the ROC AUC, 0.5 when the look-alike's photos show the
    look as strongly (a part both twins have), about 1 when they do not; ``None`` when the
    look-alike has no photo. Against the photos with the region, not all of the class's, so
    that a cue on a third of its class's photos is as distinct as one on all of them."""
    if not len(with_region) or not len(lookalike):
        return None
    truth = np.r_[np.ones(len(with_region)), np.zeros(len(lookalike))]
    return float(roc_auc_score(truth, np.r_[with_region, lookalike]))


def cluster_regions(descriptions: np.ndarray, min_photos: int) -> np.ndarray:
    """A cluster label per description (``-1``: noise), by HDBSCAN."""
    if len(descriptions) < max(2, min_photos):
        return np.full(len(descriptions), -1)
    return HDBSCAN(min_cluster_size=min_photos, copy=True).fit_predict(descriptions)


def shares(
    photo_classes: np.ndarray, member_photos: set[int], num_examined: Counter, c: int
) -> tuple[float, float]:
    """The share of class ``c``'s examined photos a cluster holds, and the share of the other
    classes' examined photos it holds."""
    held = sum(int(photo_classes[p]) == c for p in member_photos)
    others = sum(num_examined.values()) - num_examined[c]
    elsewhere = (len(member_photos) - held) / others if others else 0.0
    return held / num_examined[c], elsewhere


def _with_without(own: np.ndarray, member_photos: set[int], right: np.ndarray):
    """Whether each of the class's photos (``own``) was right, for those a cluster holds and for
    the rest; ``None`` when either side is empty."""
    inside = np.array([i in member_photos for i in own], dtype=bool)
    if inside.all() or not inside.any():
        return None
    return right[own[inside]], right[own[~inside]]


def presence_gap(own: np.ndarray, member_photos: set[int], right: np.ndarray) -> float | None:
    """Accuracy on the class's photos (``own``) that a cluster holds minus on those it does not
    (``right``: whether each photo was classified right); ``None`` when either side is empty."""
    sides = _with_without(own, member_photos, right)
    return None if sides is None else float(sides[0].mean() - sides[1].mean())


def presence_p(own: np.ndarray, member_photos: set[int], right: np.ndarray) -> float | None:
    """The one-sided p-value of the presence gap: Fisher's exact test on the right and wrong
    photos with and without the region, the chance of a gap this large if the region's photos
    were no likelier right. A species' own regions, missed on a photo or two the model got
    wrong, show a gap of 1.0 with p = 1/n: chance, not a cue."""
    sides = _with_without(own, member_photos, right)
    if sides is None:
        return None
    (a, b) = sides
    table = [[int(a.sum()), int((~a).sum())], [int(b.sum()), int((~b).sum())]]
    return float(fisher_exact(table, alternative="greater").pvalue)


def box_in_photo(box: Box, photo: Image.Image, spec: InputSpec) -> Box:
    """A box in the network input's pixels, back in ``photo``'s pixels (the inverse of the eval
    resize and centre crop)."""
    width, height = photo.size
    scale = round(spec.image_size / spec.crop_ratio) / min(width, height)
    dx, dy = (width * scale - spec.image_size) / 2, (height * scale - spec.image_size) / 2
    x0, y0, x1, y1 = box
    return ((x0 + dx) / scale, (y0 + dy) / scale, (x1 + dx) / scale, (y1 + dy) / scale)


def examined(records: Sequence, class_names: Sequence[str], cfg: DiscoverConfig) -> list:
    """The records discovery looks at: the ``max_classes`` most photographed classes, at most
    ``max_photos_per_class`` photos each, in the records' order (the same on every run)."""
    known = set(class_names)
    counts = Counter(r.taxon_name for r in records if r.taxon_name in known)
    chosen = {c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}
    chosen = set(sorted(chosen, key=lambda c: (-counts[c], c))[: cfg.max_classes])
    taken: Counter = Counter()
    kept = []
    for r in records:
        if r.taxon_name in chosen and taken[r.taxon_name] < cfg.max_photos_per_class:
            taken[r.taxon_name] += 1
            kept.append(r)
    return kept


class Discovery:
    """The five steps of the module doc on a split's photos (``labels``: their true class
    indices). :meth:`run` returns the clusters, ranked; :attr:`cams` and :attr:`inputs` keep
    what the gallery shows."""

    def __init__(self, cfg: DiscoverConfig, spec: InputSpec) -> None:
        self.cfg, self.spec = cfg, spec
        self.cams = np.zeros((0, 1, 1), np.float32)
        self.inputs = torch.zeros(0)
        self.maps = torch.zeros(0)

    def _tensor(self, photos: Sequence[Image.Image]) -> torch.Tensor:
        tf = self.spec.transform()
        return torch.stack([tf(p.convert("RGB")) for p in photos])

    def _preds(self, net: nn.Module, photos: Sequence[Image.Image]) -> np.ndarray:
        if not photos:
            return np.zeros(0, np.int64)
        return forward(net, self._tensor(photos), self.cfg.batch_size).argmax(1)

    def run(
        self,
        net: nn.Module,
        photos: Sequence[Image.Image],
        labels: np.ndarray,
        class_names: Sequence[str],
    ) -> list[DiscoveredCue]:
        cfg = self.cfg
        if not len(photos):
            return []
        with untouched(net):
            net.eval()
            self.inputs = x = self._tensor(photos)
            probs, self.maps = with_maps(net, x, cfg)
            self.cams = compute_cams(net, x, labels.tolist(), cfg.cam, cfg.batch_size)
            proposals = self.propose(self.cams)
            if not proposals:
                return []
            looks = describe(self.maps, proposals, x.shape[-1], cfg.position_weight)
            found = cluster_regions(looks, cfg.min_cluster_photos)
            right = probs.argmax(1) == labels
            cues = self.candidates(proposals, found, labels, right, class_names)
            for cue in cues[: cfg.max_clusters]:
                self.test(net, cue, photos, labels, probs, class_names)
            ranked = rank(cues, cfg)
            if cfg.refine_grid:
                for cue in ranked:
                    if cue.verdict == SUSPECTED:
                        self.refine(net, cue, class_names.index(cue.class_))
        return ranked

    def propose(self, cams: np.ndarray) -> list[Proposal]:
        """Each photo's regions (:func:`cam_regions`)."""
        cfg, side = self.cfg, cams.shape[-1]
        low, high = max(1, round(cfg.min_box * side)), max(1, round(cfg.max_box * side))
        return [
            Proposal(i, box)
            for i, cam in enumerate(cams)
            for box in cam_regions(cam, cfg.proposals_per_photo, cfg.cam_threshold, low, high)
        ]

    def refine(self, net: nn.Module, cue: DiscoveredCue, c: int) -> None:
        """Boxes finer than the CAM's for each photo's first region of the cue
        (:attr:`Proposal.fine`), by what occluding them costs class ``c``
        (:func:`~inat_lightning.analysis.occlusion.finer_boxes`)."""
        cfg = self.cfg
        firsts = first_regions(cue.members)
        found = finer_boxes(
            net, self.inputs, [(p.photo, p.box) for p in firsts], c,
            Refinement(cfg.refine_grid, cfg.refine_keep, cfg.refine_hold, cfg.batch_size),
        )  # fmt: skip
        for p, fine in zip(firsts, found):
            p.fine = fine

    def candidates(
        self,
        proposals: Sequence[Proposal],
        found: np.ndarray,
        labels: np.ndarray,
        right: np.ndarray,
        class_names: Sequence[str],
    ) -> list[DiscoveredCue]:
        """A candidate per cluster and class with ``min_cluster_photos`` of its photos there
        (a cluster may mix the hand on one species' photos with a look-alike part of another:
        each class's part is judged on its own), with its shares and presence gap (``right``:
        whether each photo was classified right). Those that pass the verdict's gates before
        the counterfactuals come first (the largest gap first), then the most over-represented.
        """
        cfg = self.cfg
        examined_per_class = Counter(labels.tolist())
        floor = 1 / max(1, len(labels))
        cues = []
        for k in sorted(set(found.tolist()) - {-1}):
            members = [p for p, f in zip(proposals, found) if f == k]
            photos = {p.photo for p in members}
            held = Counter(int(labels[i]) for i in photos)
            for c in sorted(held):
                if held[c] < cfg.min_cluster_photos:
                    continue
                share, elsewhere = shares(labels, photos, examined_per_class, c)
                mine = np.flatnonzero(labels == c)
                gap, chance = presence_gap(mine, photos, right), presence_p(mine, photos, right)
                own = [p for p in members if labels[p.photo] == c]
                ratio = share / max(elsewhere, floor)
                cue = DiscoveredCue(0, class_names[c], k, held[c], share, elsewhere, ratio, gap,
                                    None, None, "", "", own, presence_p=chance)  # fmt: skip
                cues.append(cue)

        def first(q: DiscoveredCue) -> tuple:
            passed = gates(q, cfg)
            return not passed, -(q.presence_gap or 0.0) if passed else -q.over_representation

        return sorted(cues, key=first)

    def test(self, net, cue, photos, labels, probs, class_names) -> None:
        """The counterfactuals of one cue: the region removed from its class's photos against a
        same-size hole elsewhere, and pasted onto the class's look-alike's photos."""
        c = class_names.index(cue.class_)
        rng = np.random.default_rng(self.cfg.seed)
        own = {
            p.photo: box_in_photo(p.box, photos[p.photo], self.spec)
            for p in first_regions(cue.members)
            if labels[p.photo] == c
        }
        idx = sorted(own)
        removal = self.cfg.removal
        removed = self._preds(net, [cf.remove_box(photos[i], own[i], removal) for i in idx])
        holes = [cf.control_box(own[i], *photos[i].size, rng) for i in idx]
        control = self._preds(
            net, [cf.remove_box(photos[i], h, removal) for i, h in zip(idx, holes)]
        )
        cue.acc_drop = float(np.mean(control == c) - np.mean(removed == c)) if idx else None
        twin = cf.lookalike(removed, c) if idx else None
        if twin is None:
            mean = probs[labels == c].mean(0)
            mean[c] = -np.inf
            twin = int(mean.argmax())
        cue.lookalike = class_names[twin]
        targets = np.flatnonzero(labels == twin)
        found_on = sorted({p.photo for p in cue.members})
        scores = look_scores(self.maps, cue.members, self.inputs.shape[-1], [*found_on, *targets])
        cue.look_separation = separation(scores[: len(found_on)], scores[len(found_on) :])
        if not len(targets) or not idx:
            return
        pasted = [
            cf.paste_box(photos[t], photos[idx[j % len(idx)]], own[idx[j % len(idx)]])[0]
            for j, t in enumerate(targets)
        ]
        after = self._preds(net, pasted)
        cue.transplant_flip = float(np.mean(after == c) - np.mean(probs[targets].argmax(1) == c))


def gates(cue: DiscoveredCue, cfg: DiscoverConfig) -> bool:
    """The verdict's conditions before any counterfactual: on enough of its class's photos, over-
    represented there, and the class more often right on the photos that show it."""
    return (
        cue.photos >= cfg.min_cluster_photos
        and cue.share_in_class >= cfg.min_share_in_class
        and cue.over_representation >= cfg.min_over_representation
        and cue.presence_gap is not None
        and cue.presence_gap >= cfg.min_gap
        and cue.presence_p is not None
        and cue.presence_p <= cfg.max_presence_p
    )


def verdict(cue: DiscoveredCue, cfg: DiscoverConfig) -> str:
    """``SUSPECTED SHORTCUT`` when the cluster passes the :func:`gates`, a counterfactual
    (removal beyond the hole control, or the transplant) says the class needs it, and its look
    tells the photos it is on from the look-alike's (not measured, and not required, when the
    look-alike has no photo examined)."""
    drop, flip, apart = cue.acc_drop, cue.transplant_flip, cue.look_separation
    causal = (drop is not None and drop >= cfg.min_drop) or (
        flip is not None and flip >= cfg.min_flip
    )
    distinct = apart is None or apart >= cfg.min_separation
    return SUSPECTED if gates(cue, cfg) and causal and distinct else ""


def rank(cues: list[DiscoveredCue], cfg: DiscoverConfig) -> list[DiscoveredCue]:
    """Suspected shortcuts first, then by the strongest counterfactual, then by
    over-representation; ranks from 1."""
    for cue in cues:
        cue.verdict = verdict(cue, cfg)

    def key(q: DiscoveredCue) -> tuple:
        evidence = max(q.acc_drop or 0.0, q.transplant_flip or 0.0)
        return (
            q.verdict != SUSPECTED,
            -evidence,
            -q.over_representation,
        )

    ranked = sorted(cues, key=key)
    for i, cue in enumerate(ranked, 1):
        cue.rank = i
    return ranked


#: the columns of ``discovered_boxes.csv``: what ``python -m inat_lightning.cues import-csv`` reads
BOX_COLUMNS = ("photo_id", "x0", "y0", "x1", "y1", "label")
#: the columns of ``discovered_cues.csv``
COLUMNS = (
    "rank", "class", "cluster", "photos", "share_in_class", "share_elsewhere",
    "over_representation", "presence_gap", "presence_p", "acc_drop", "transplant_flip",
    "look_separation", "lookalike", "verdict",
)  # fmt: skip


def cue_rows(cues: Sequence[DiscoveredCue]) -> list[dict]:
    """The rows of ``discovered_cues.csv``, one per cluster and class, ranked."""
    return [
        {"class": q.class_, **{k: getattr(q, k) for k in COLUMNS if k != "class"}} for q in cues
    ]


def box_rows(
    cues: Sequence[DiscoveredCue], photo_ids: Sequence[str], photos: Sequence[Image.Image],
    spec: InputSpec,
) -> list[dict]:  # fmt: skip
    """The suspected cues' regions as ``photo_id,x0,y0,x1,y1,label`` rows in the photos' pixels
    (``python -m inat_lightning.cues import-csv`` reads them): one per photo and cue, labelled
    ``discovered_<rank>``."""
    rows = []
    for q in cues:
        if q.verdict != SUSPECTED:
            continue
        for p in first_regions(q.members):
            box = box_in_photo(p.fine or p.box, photos[p.photo], spec)
            w, h = photos[p.photo].size
            x0, y0 = max(0.0, box[0]), max(0.0, box[1])
            x1, y1 = min(float(w), box[2]), min(float(h), box[3])
            rows.append(
                {"photo_id": photo_ids[p.photo], "x0": round(x0, 1), "y0": round(y0, 1),
                 "x1": round(x1, 1), "y1": round(y1, 1), "label": f"discovered_{q.rank}"}
            )  # fmt: skip
    return rows


def save_gallery(
    cues: Sequence[DiscoveredCue], discovery: Discovery, path, rows: int = 6, size: int = 128
):
    """``discovered_cues.png``: per ranked cluster (the first ``rows``), four of its regions
    cropped, then two whole photos under their red CAM with the region outlined — what a person
    would look through overlays for, ranked. ``None`` when there is no cluster."""
    lines = []
    photos01 = denormalize(discovery.inputs).permute(0, 2, 3, 1).numpy() if cues else None
    for q in list(cues)[:rows]:
        members = first_regions(q.members)
        head = f"#{q.rank} {q.class_}"[:22]
        tiles = []
        for p in members[:4]:
            x0, y0, x1, y1 = (int(v) for v in p.box)
            crop = photos01[p.photo][y0:y1, x0:x1]
            tiles.append(caption_tile(crop, [head, q.verdict or "not suspected"], size))
        for p in members[:2]:
            cam = discovery.cams[p.photo]
            tiles.append(
                cam_tile(
                    photos01[p.photo],
                    cam,
                    [head, "region outlined"],
                    size=size,
                    box=p.fine or p.box,
                )  # fmt: skip
            )
        lines.append(tiles)
    if not lines:
        return None
    height = max(t.height for row in lines for t in row)
    sheet = Image.new("RGB", (6 * size, height * len(lines)), "black")
    for r, row in enumerate(lines):
        for c, tile in enumerate(row):
            sheet.paste(tile, (c * size, r * height))
    sheet.save(path)
    return path


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two ``x0, y0, x1, y1`` boxes."""
    both = area((max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])))
    union = area(a) + area(b) - both
    return both / union if union > 0 else 0.0


def agreement(boxes: Sequence[dict], records: Sequence, min_iou: float = 0.3) -> dict[str, dict]:
    """How well discovery found a cue someone did box: per discovered label (rows of
    ``discovered_boxes.csv``), the photos that also have a known cue box, the share of them
    whose discovered region overlaps it by ``min_iou`` or more, and the share whose region's
    centre falls inside it (a coarse CAM finds a thin cue, a ruler, without matching its shape).
    """
    known = {r.photo_id: r.cue_box for r in records if r.cue_box is not None}
    found: dict[str, list[tuple[float, bool]]] = {}
    for row in boxes:
        truth = known.get(str(row["photo_id"]))
        if truth is not None:
            box = tuple(float(row[k]) for k in ("x0", "y0", "x1", "y1"))
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            inside = truth[0] <= cx <= truth[2] and truth[1] <= cy <= truth[3]
            found.setdefault(str(row["label"]), []).append((iou(box, truth), inside))
    return {
        label: {
            "boxed_photos": len(v),
            "overlapping": float(np.mean([o >= min_iou for o, _ in v])),
            "centred": float(np.mean([c for _, c in v])),
        }
        for label, v in found.items()
    }


def discover_split(
    net: nn.Module,
    root: Path,
    records: Sequence,
    class_names: Sequence[str],
    spec: InputSpec,
    cfg: DiscoverConfig,
    out: Path,
    max_pixels: int,
) -> dict:
    """Discovery on a split's records (those :func:`examined`), written to ``out``:
    ``discovered_cues.csv`` (a row per cluster, ranked), ``discovered_boxes.csv`` (the suspected
    regions, for ``cues import-csv``) and ``discovered_cues.png``. Returns what
    ``metrics.json`` keeps; unreadable photos are skipped and listed."""
    from inat_lightning.data.dataset import load_readable

    index = {n: i for i, n in enumerate(class_names)}
    kept, photos, skipped = load_readable(root, examined(records, class_names, cfg), max_pixels)
    labels = np.array([index[r.taxon_name] for r in kept], dtype=np.int64)
    discovery = Discovery(cfg, spec)
    cues = discovery.run(net, photos, labels, class_names)
    rows = cue_rows(cues)
    write_csv(out / "discovered_cues.csv", rows, COLUMNS)
    boxes = box_rows(cues, [r.photo_id for r in kept], photos, spec)
    write_csv(out / "discovered_boxes.csv", boxes, BOX_COLUMNS)
    gallery = save_gallery(cues, discovery, out / "discovered_cues.png")
    log.info(
        "discovery: %d photos of %d classes, %d clusters, %d suspected shortcuts",
        len(kept), len(set(labels.tolist())), len(cues),
        sum(q.verdict == SUSPECTED for q in cues),
    )  # fmt: skip
    return {
        # where someone did box a cue (never read to find one): how the suspected regions agree
        "overlap_with_known_boxes": agreement(boxes, kept),
        "examined_photos": len(kept),
        "examined_classes": len(set(labels.tolist())),
        "rows": rows,
        "boxes": len(boxes),
        "gallery": gallery.name if gallery else None,
        "skipped_images": skipped,
    }
