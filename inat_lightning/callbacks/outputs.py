"""Keeps the test logits and labels (calibration is measured on them after the test)."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
import torch


class CollectTestLogits(L.Callback):
    """Collects the logits and labels of every test batch (this process's share under DDP)."""

    def __init__(self) -> None:
        self._logits: list[torch.Tensor] = []
        self._labels: list[torch.Tensor] = []
        self._indices: list[torch.Tensor] = []

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._logits, self._labels, self._indices = [], [], []

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: dict, *args) -> None:
        if outputs:  # None: every image of the batch was unreadable
            self._logits.append(outputs["logits"].float().cpu())
            self._labels.append(batch["label"].cpu())
            self._indices.append(batch["index"].cpu())

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, labels)`` of the last test."""
        if not self._logits:
            return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
        return torch.cat(self._logits), torch.cat(self._labels)

    def indices(self) -> torch.Tensor:
        """The test dataset index of each row of :meth:`result` (unreadable images skipped)."""
        return torch.cat(self._indices) if self._indices else torch.zeros(0, dtype=torch.long)
