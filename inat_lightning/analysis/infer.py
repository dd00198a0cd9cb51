"""The one inference pass: a network over a dataset of photos (or a stack of inputs), batched, in
eval mode, on any device, as typed :class:`Predictions`. Calibration after training, counting a
test that ran in spawned workers, ``predict.py`` and the bias audit's counterfactuals all run
through it, so they measure what the model is tested on."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from inat_lightning.data.dataset import collate_skipping
from inat_lightning.progress import progress


@dataclass
class Predictions:
    """The logits of every item of a dataset, in dataset order: ``logits`` is ``(N, K)`` float32
    with NaN rows for unreadable photos; ``labels`` is ``(N,)`` (-1 where the truth is
    unknown)."""

    logits: np.ndarray
    labels: np.ndarray

    @property
    def readable(self) -> np.ndarray:
        """Mask of the rows with finite logits (the photo was read, the model did not diverge)."""
        if not self.logits.size:  # no item, or nothing read (no width known)
            return np.zeros(len(self.logits), bool)
        return np.isfinite(self.logits).all(1)

    def probabilities(self, temperature: float = 1.0) -> np.ndarray:
        """``softmax(logits / temperature)``, NaN rows kept."""
        z = torch.from_numpy(self.logits).float() / temperature
        return torch.softmax(z, 1).numpy()

    @classmethod
    def gather(cls, stream: Iterable[Batch], n: int) -> Predictions:
        """A stream of :func:`batches` over ``n`` items, in memory (``(N, K)``: for a test set
        or a calibration split; ``predict.py`` streams instead)."""
        logits: np.ndarray | None = None
        labels = np.full(n, -1, dtype=np.int64)
        for b in stream:
            if logits is None:
                logits = np.full((n, b.logits.shape[1]), np.nan, dtype=np.float32)
            logits[b.index] = b.logits
            labels[b.index] = b.labels
        return cls(logits if logits is not None else np.zeros((n, 0), np.float32), labels)

    def known(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, labels)`` of the readable rows with a known label, as tensors (what
        temperature fitting and confusion counting take)."""
        keep = self.readable & (self.labels >= 0)
        return torch.from_numpy(self.logits[keep]), torch.from_numpy(self.labels[keep]).long()


@dataclass
class Batch:
    """One batch of :func:`batches`: the dataset ``index`` of each readable item, its ``logits``
    ``(B, K)`` float32 and its ``labels``."""

    index: np.ndarray
    logits: np.ndarray
    labels: np.ndarray


@torch.inference_mode()
def batches(
    net: nn.Module,
    dataset: Dataset,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    num_workers: int = 0,
    show_progress: bool = False,
) -> Iterator[Batch]:
    """Every readable item of ``dataset`` (this project's
    :class:`~inat_lightning.data.dataset.ImageDataset`, or a ``Subset`` of it: items carry
    ``image``, ``label`` and ``index``; unreadable ones are skipped) through ``net`` in eval mode
    on ``device``, a batch at a time in dataset order: memory is one batch, whatever the number
    of photos and classes."""
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=collate_skipping
    )
    net = net.eval().to(device)
    bar = progress(loader, desc="predict", unit="batch", disable=not show_progress)
    with bar:
        for batch in bar:
            if batch["image"] is None:  # every photo of the batch unreadable
                continue
            out = net(batch["image"].to(device)).float().cpu().numpy()
            yield Batch(batch["index"].numpy(), out, batch["label"].numpy())


@torch.inference_mode()
def forward(net: nn.Module, x: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Softmax outputs ``(N, K)`` of a stack of inputs already made (the audit's counterfactual
    photos), a batch at a time on the network's device."""
    device = next(net.parameters()).device
    if not len(x):
        return np.zeros((0, _classes(net)), dtype=np.float32)
    return torch.cat(
        [
            torch.softmax(net(x[i : i + batch_size].to(device)).float(), 1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    ).numpy()


def _classes(net: nn.Module) -> int:
    head = getattr(net, "fc", None)
    return int(head.out_features) if isinstance(head, nn.Linear) else 0
