"""Exact resume in the middle of an epoch: a train order that is a function of the seed and the
epoch alone, and a loader that says (in Lightning's checkpoints) how far into it the trainer got.

Lightning saves ``loader.state_dict()`` in every checkpoint and gives it back to
``load_state_dict`` before the resumed fit iterates, when the loader has both methods. The state
is the trainer's own count of the batches it has processed, not the loader's: the loader runs a
batch ahead (Lightning prefetches one), so its own count would skip a batch nobody trained on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sized
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


class PlaceMismatch(ValueError):
    """A checkpoint's place in an epoch that this run's loader cannot continue from."""


class EpochSampler(DistributedSampler):
    """This rank's share of one epoch's order: a permutation of the dataset (or, with
    ``weights``, a draw with replacement: class-balanced sampling) from ``(seed, epoch)``, each
    index paired with a seed of its own for that photo's augmentation. Ranks get equal shares
    (the last few indices repeated, as ``DistributedSampler`` does). :meth:`start_at` starts an
    epoch past the samples a resumed run has already trained on."""

    def __init__(
        self,
        dataset: Sized,
        seed: int,
        num_replicas: int = 1,
        rank: int = 0,
        weights: torch.Tensor | None = None,
        data_id: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.weights = weights
        #: what the dataset is (a number the data module derives from its content): a place in
        #: an epoch belongs to one dataset
        self.data_id = data_id
        self._skip: tuple[int, int] = (-1, 0)  # (epoch, samples) to leave out

    def start_at(self, epoch: int, samples: int) -> None:
        """Epoch ``epoch`` (the next one this sampler is iterated for) begins at its
        ``samples``-th sample of this rank."""
        self.epoch, self._skip = epoch, (epoch, samples)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        n = len(self.dataset)  # type: ignore[arg-type]
        if self.weights is not None:
            order = torch.multinomial(self.weights, n, replacement=True, generator=g)
        else:
            order = torch.randperm(n, generator=g)
        seeds = torch.randint(0, 2**62, (n,), generator=g)
        total = math.ceil(n / self.num_replicas) * self.num_replicas
        repeat = torch.arange(total) % n  # pads with the first positions again
        mine = repeat[self.rank : total : self.num_replicas]
        epoch, samples = self._skip
        start = samples if epoch == self.epoch else 0
        for pos in mine[start:].tolist():
            yield int(order[pos]), int(seeds[pos])

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.num_replicas)  # type: ignore[arg-type]


class ResumableLoader(DataLoader):
    """A ``DataLoader`` over an :class:`EpochSampler` whose position Lightning keeps in its
    checkpoints. ``progress``: how many of this epoch's batches the trainer has processed, and
    of how many the epoch has (``limit_train_batches`` may stop it early); set by the data
    module that made the loader."""

    progress: Callable[[], tuple[int, int]] = staticmethod(lambda: (0, 1))  # type: ignore

    def _made_with(self) -> dict[str, int]:
        """What the place means: the same batch in another run needs all of these equal."""
        sampler = self.sampler
        assert isinstance(sampler, EpochSampler)
        return {
            "batch_size": int(self.batch_size or 1),
            "world_size": int(sampler.num_replicas),
            "photos": len(sampler.dataset),  # type: ignore[arg-type]
            "data": int(sampler.data_id),
            "balanced": int(sampler.weights is not None),
            "seed": int(sampler.seed),
        }

    def state_dict(self) -> dict[str, int]:
        batches, of = self.progress()
        place = {"epoch": int(self.sampler.epoch), "batches": int(batches), "of": int(of)}
        return {**place, **self._made_with()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Only counts are read from a checkpoint (it may come from anyone). A place in the
        middle of an epoch saved by a run of another batch size, process count, data or seed
        is a :class:`PlaceMismatch` naming it (at an epoch's end, the next epoch starts whole
        whatever they are)."""
        keys = ("epoch", "batches", "of", *self._made_with())
        if not all(isinstance(state.get(k), int) and state[k] >= 0 for k in keys):
            raise ValueError(f"a train loader state of other contents: {state!r}")
        epoch, batches, of = state["epoch"], state["batches"], state["of"]
        assert isinstance(self.sampler, EpochSampler)
        if batches >= of:  # saved at the end of its epoch: the next one starts whole
            self.sampler.start_at(epoch + 1, 0)
            return
        for key, now in self._made_with().items():
            if state[key] != now:
                raise PlaceMismatch(
                    f"resume: the checkpoint stopped mid-epoch with {key}={state[key]}, this "
                    f"run has {now}: its place in the epoch would be another's (resume from an "
                    "end-of-epoch checkpoint to change it)"
                )
        self.sampler.start_at(epoch, batches * int(self.batch_size or 1))
