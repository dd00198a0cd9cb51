"""The place prior: p(species | place, season), fused with the vision model's probabilities —
what iNaturalist's own "expected nearby" geo model does (SINR,
``inaturalist/inatGeoModelTraining``).

A small MLP over the encoded place and day of the year (:func:`inat_lightning.data.geo.encode`)
is fitted on the training split after training and stored in the checkpoint (plain tensors).
During fitting the place or the date of a photo is hidden at random, so the model also answers
from the place alone or the season alone.

**Fusion** (Bayes with the two models conditionally independent given the species):
``log p(y | photo, place) = log p_vision(y | photo) + w · [log p(y | place) − log p(y)] + c``,
where ``p(y)`` is the training frequency both models already learned (divided out once) and
``w`` the ``prior_weight`` (0: vision alone). A photo without place and date is left alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from inat_lightning.data.geo import FEATURES, Place, encode
from inat_lightning.models.backbones import checked_state_dict
from inat_lightning.validation import require, require_numbers

log = logging.getLogger(__name__)

#: the widest hidden layers of a prior (``prior.hidden``, and a checkpoint's)
MAX_HIDDEN = 4096
#: the largest magnitude of a stored prior's weights and log-frequencies. The encoded inputs
#: lie in [-1, 1], so through three layers at most MAX_HIDDEN wide the logits stay below
#: ~1.4e20 (float32 holds 3.4e38): every log-probability is finite. A fit gets nowhere near:
#: Adam moves a weight by about ``lr`` per step (the default fit: 800 × 0.01); a weight this
#: large is a diverged fit or a tampered file.
MAX_MAGNITUDE = 1e4
#: what :meth:`PlacePrior.to_dict` writes (a checkpoint's prior holds exactly these)
PRIOR_KEYS = frozenset({"version", "hidden", "state", "log_freq", "photos"})


def _hidden_ok(hidden: object) -> bool:
    return isinstance(hidden, int) and not isinstance(hidden, bool) and 1 <= hidden <= MAX_HIDDEN


def _mlp(num_classes: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(FEATURES, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, num_classes),
    )


class PlacePrior:
    """A fitted prior: the MLP and the training class frequencies."""

    def __init__(self, net: nn.Sequential, log_freq: torch.Tensor, photos: int) -> None:
        self.net, self.log_freq, self.photos = net.eval(), log_freq, photos

    @property
    def num_classes(self) -> int:
        return len(self.log_freq)

    @torch.no_grad()
    def log_probabilities(self, places: Sequence[Place]) -> np.ndarray:
        """``(N, K)`` log p(species | place, season); the training frequencies where a photo
        has neither."""
        x = torch.from_numpy(encode(places))
        out = torch.log_softmax(self.net(x), 1)
        unknown = x[:, 3].eq(0) & x[:, 6].eq(0)
        out[unknown] = self.log_freq
        return out.numpy()

    def log_ratio(self, places: Sequence[Place], weight: float = 1.0) -> np.ndarray:
        """``(N, K)`` the term added to the vision log-probabilities (module doc); zeros for a
        photo without place and date."""
        return weight * (self.log_probabilities(places) - self.log_freq.numpy())

    def to_dict(self) -> dict[str, Any]:
        """Plain tensors and numbers: a checkpoint loads with ``weights_only=True``."""
        return {
            "version": 1,
            "hidden": self.net[0].out_features,
            "state": {k: v.detach().clone() for k, v in self.net.state_dict().items()},
            "log_freq": self.log_freq.clone(),
            "photos": self.photos,
        }

    @classmethod
    def from_dict(cls, found: object, num_classes: int, where: str) -> PlacePrior:
        """A prior read from a checkpoint that may come from anyone: exactly the keys of
        :meth:`to_dict`, shapes and values checked (finite, within :data:`MAX_MAGNITUDE`); a
        ``ValueError`` naming ``where``. The same rules keep a diverged fit out of a
        checkpoint."""
        if not isinstance(found, Mapping) or found.get("version") != 1:
            raise ValueError(f"{where}: the place prior is not a version-1 mapping")
        if set(found) != PRIOR_KEYS:
            keys = sorted(map(str, set(found) ^ PRIOR_KEYS))
            raise ValueError(f"{where}: place prior keys {keys} unknown or missing")
        hidden, log_freq, photos = found["hidden"], found["log_freq"], found["photos"]
        if not _hidden_ok(hidden):
            raise ValueError(f"{where}: place prior hidden={hidden!r:.80}")
        if isinstance(photos, bool) or not isinstance(photos, int) or photos < 0:
            raise ValueError(f"{where}: place prior photos={photos!r:.80}")
        if not isinstance(log_freq, torch.Tensor) or tuple(log_freq.shape) != (num_classes,):
            raise ValueError(f"{where}: place prior frequencies do not fit {num_classes} classes")
        net = _mlp(num_classes, hidden)
        try:
            net.load_state_dict(checked_state_dict(found["state"], f"{where}: place prior state"))
        except RuntimeError as e:
            raise ValueError(f"{where}: place prior weights: {e}") from None
        tensors = [log_freq, *net.state_dict().values()]
        if not all(torch.isfinite(t).all() for t in tensors):
            raise ValueError(f"{where}: the place prior holds non-finite values")
        if any(t.abs().max() > MAX_MAGNITUDE for t in tensors) or log_freq.max() > 0:
            raise ValueError(
                f"{where}: the place prior holds values beyond ±{MAX_MAGNITUDE:g} or "
                "log-frequencies above 0 (a diverged fit, or edited)"
            )
        return cls(net, log_freq.float(), photos)


@dataclass
class PriorFit:
    """How the place prior is fitted (``prior.*`` of ``train.py``).

    Args:
        enabled: fit one after training (needs ``min_photos`` training photos with a place or
            a date).
        hidden: width of the MLP's two hidden layers.
        steps: optimisation steps (minibatches drawn with replacement: the cost does not grow
            with the data).
        batch_size: photos per step.
        lr: Adam's learning rate.
        weight_decay: L2 penalty (a smooth range, not a memorised dot per photo).
        hide_place: share of photos whose place is hidden at each step (learns the season alone).
        hide_date: share whose date is hidden (learns the place alone).
        min_photos: fewest usable training photos for a prior.
        seed: the fit's own random stream (reproducible whatever ran before).
    """

    enabled: bool = True
    hidden: int = 64
    steps: int = 800
    batch_size: int = 512
    lr: float = 0.01
    weight_decay: float = 1e-4
    hide_place: float = 0.2
    hide_date: float = 0.2
    min_photos: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        require({k: (v is not None, "set (not null)") for k, v in vars(self).items()}, vars(self))
        ints = ("hidden", "steps", "batch_size", "min_photos", "seed")
        require_numbers(vars(self), ints, ("lr", "weight_decay", "hide_place", "hide_date"))
        require(
            {
                "enabled": (isinstance(self.enabled, bool), "true or false"),
                "hidden": (_hidden_ok(self.hidden), f"an integer in [1, {MAX_HIDDEN}]"),
                "steps": (self.steps >= 1, "an integer >= 1"),
                "batch_size": (self.batch_size >= 1, "an integer >= 1"),
                "lr": (0 < self.lr < math.inf, "a finite number > 0"),
                "weight_decay": (0 <= self.weight_decay < math.inf, "a finite number >= 0"),
                "hide_place": (0 <= self.hide_place < 1, "in [0, 1)"),
                "hide_date": (0 <= self.hide_date < 1, "in [0, 1)"),
                "min_photos": (self.min_photos >= 1, "an integer >= 1"),
                "seed": (0 <= self.seed < 2**63, "an integer in [0, 2**63)"),
            },
            vars(self),
        )

    def fit(self, places: Sequence[Place], labels: Sequence[int], num_classes: int):
        """The prior of photos ``places`` with classes ``labels``, or ``None`` when disabled or
        fewer than ``min_photos`` have a place or a date."""
        labels = np.asarray(labels, dtype=np.int64)
        counts = np.bincount(labels[labels >= 0], minlength=num_classes).astype(np.float64)
        usable = [i for i, (p, y) in enumerate(zip(places, labels)) if p.known and y >= 0]
        if not self.enabled or len(usable) < self.min_photos:
            if self.enabled:
                log.info("no place prior: %d training photos have a place or date", len(usable))
            return None
        x = torch.from_numpy(encode([places[i] for i in usable]))
        y = torch.from_numpy(labels[usable])
        g = torch.Generator().manual_seed(self.seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = _mlp(num_classes, self.hidden)
        opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        net.train()
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # matrices this small: threads cost more than they give (7x)
        try:
            loss = self._steps(net, opt, x, y, g)
        finally:
            torch.set_num_threads(threads)
        smoothed = (counts + 1) / (counts.sum() + num_classes)  # a class never seen: not -inf
        log_freq = torch.tensor(np.log(smoothed), dtype=torch.float32)
        prior = PlacePrior(net, log_freq, len(y))
        try:  # the rules a checkpoint's prior is read with: a diverged fit is never stored
            PlacePrior.from_dict(prior.to_dict(), num_classes, "prior")
        except ValueError as e:
            log.warning("no place prior: the fit diverged (%s); try a lower prior.lr", e)
            return None
        log.info("place prior fitted on %d photos (final batch loss %.3f)", len(y), loss)
        return prior

    def _steps(
        self,
        net: nn.Sequential,
        opt: torch.optim.Optimizer,
        x: torch.Tensor,
        y: torch.Tensor,
        g: torch.Generator,
    ) -> float:
        """The minibatch steps; returns the last batch's loss."""
        loss = torch.zeros(())
        for _ in range(self.steps):
            pick = torch.randint(len(y), (min(self.batch_size, len(y)),), generator=g)
            xb = x[pick].clone()
            for cols, share in ((slice(0, 4), self.hide_place), (slice(4, 7), self.hide_date)):
                hide = torch.rand(len(xb), generator=g) < share
                xb[hide, cols] = 0.0
            loss = nn.functional.cross_entropy(net(xb), y[pick])
            opt.zero_grad()
            loss.backward()
            opt.step()
        return float(loss.item())


def fused_log_probabilities(
    log_vision: np.ndarray, prior: PlacePrior | None, places: Sequence[Place], weight: float
) -> np.ndarray:
    """``(N, K)`` vision log-probabilities with the prior's term added and renormalised (module
    doc); unchanged without a prior, at weight 0, or for photos without place and date."""
    if prior is None or weight == 0 or not len(log_vision):
        return log_vision
    fused = log_vision + prior.log_ratio(places, weight)
    return fused - _logsumexp(fused)


def _logsumexp(a: np.ndarray) -> np.ndarray:
    top = a.max(1, keepdims=True)
    return top + np.log(np.exp(a - top).sum(1, keepdims=True))
