"""Long runs you can watch from a log: a progress bar that fits the output, one line per epoch,
and throughput in TensorBoard.

* :func:`progress_bar`: Lightning's rich bar on a terminal; elsewhere (``nohup``, SLURM, CI)
  :class:`LineProgressBar`, a plain line every ``every_s`` seconds.
* :class:`EpochLog`: one log line per epoch (epoch/total, train loss, the monitored metric and
  its best, learning rate, images/s, loader wait, epoch time, ETA), a line per new best
  checkpoint and per learning-rate reduction; and the ``perf/*`` scalars: train and eval
  images/s, the share of train time spent waiting for the loader (near 1: the input pipeline is
  the bottleneck) and, on a GPU, the memory peak.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import lightning.pytorch as L
import torch
from lightning.pytorch.callbacks import ProgressBar, RichProgressBar

from inat_lightning.callbacks.checkpoints import best_checkpointing
from inat_lightning.models.metric_names import key
from inat_lightning.progress import LineProgress, duration, is_terminal

log = logging.getLogger(__name__)


def _batch_size(batch: Any) -> int:
    labels = batch.get("label") if isinstance(batch, dict) else None
    return len(labels) if labels is not None else 0


class LineProgressBar(ProgressBar):
    """Progress as log lines, every ``every_s`` seconds of a train, validation or test epoch:
    ``epoch 3/12 train: 52/130 batches (40%), 3.1 batches/s, ETA 25s, loss=1.234``.

    Args:
        every_s: seconds between two lines of one epoch.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._enabled = True
        self._bar: LineProgress | None = None

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _start(self, trainer: L.Trainer, what: str, total: float) -> None:
        if not self._enabled or not trainer.is_global_zero:
            self._bar = None
            return
        desc = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs} {what}"
        if what == "test":
            desc = "test"
        total = total if total != float("inf") else None
        self._bar = LineProgress(total=total, desc=desc, unit="batches", every_s=self.every_s)

    def _advance(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._bar is None:
            return
        loss = trainer.callback_metrics.get(key("train", "loss_step"))
        if loss is not None and self._bar.desc.endswith("train"):
            self._bar.set_postfix(loss=f"{float(loss):.4f}")
        self._bar.update(1)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, "train", self.total_train_batches)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._advance(trainer, pl_module)

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._start(trainer, "validation", sum(trainer.num_val_batches))

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        if not trainer.sanity_checking:
            self._advance(trainer, pl_module)

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start(trainer, "test", sum(trainer.num_test_batches))

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
        self._advance(trainer, pl_module)


def progress_bar(every_s: float = 30.0) -> ProgressBar:
    """Lightning's rich bar when stderr is a terminal, else :class:`LineProgressBar`."""
    return RichProgressBar() if is_terminal() else LineProgressBar(every_s)


class EpochLog(L.Callback):
    """One log line per training epoch, and the throughput scalars (``perf/*``). See module doc.

    Args:
        gpu_memory: log the GPU memory peak (``perf/gpu_memory_peak_gb``) when on CUDA.
    """

    def __init__(self, gpu_memory: bool = True) -> None:
        self.gpu_memory = gpu_memory
        self._epoch_times: list[float] = []
        self._lr: float | None = None
        self._best: float | None = None  # of the monitored metric
        self._best_path = ""
        self._reset()

    def _reset(self) -> None:
        self._start = self._last_end = time.monotonic()
        self._train_images = 0
        self._train_time = 0.0
        self._wait = 0.0
        self._eval_images = 0
        self._eval_start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:  # what the speeds below depend on
            threads = torch.get_num_threads()
            log.info("fit: %d process(es) x %d torch thread(s)", trainer.world_size, threads)

    # ------------------------------------------------------------------ training batches
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._reset()
        if trainer.is_global_zero:
            self._log_checkpoint(trainer)  # saved after the previous epoch's line
        lr = _lr(trainer)
        if self._lr is not None and lr is not None and lr < self._lr and trainer.is_global_zero:
            log.info("lr reduced: %.3g -> %.3g (the monitored metric stalled)", self._lr, lr)
        self._lr = lr
        if trainer.is_global_zero and self.gpu_memory and torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        now = time.monotonic()
        self._wait += now - self._last_end  # fetching this batch: the loader's time

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last_end = time.monotonic()
        self._train_images += _batch_size(batch)
        self._train_time = self._last_end - self._start

    # ------------------------------------------------------------------ evaluation batches
    def _eval_epoch_start(self) -> None:
        self._eval_images, self._eval_start = 0, time.monotonic()

    def _eval_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str):
        elapsed = time.monotonic() - self._eval_start
        if self._eval_images and elapsed > 0:
            _log_perf(trainer, {f"perf/{stage}_images_per_s": self._eval_images / elapsed})

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_epoch_start()

    def on_test_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_epoch_start()

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0
    ):
        self._eval_images += _batch_size(batch)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, *args) -> None:
        self._eval_images += _batch_size(batch)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._eval_epoch_end(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._eval_epoch_end(trainer, pl_module, "test")

    # ------------------------------------------------------------------ the epoch's line
    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch_time = time.monotonic() - self._start
        self._epoch_times.append(epoch_time)
        perf = {}
        if self._train_time > 0:
            perf["perf/train_images_per_s"] = self._train_images / self._train_time
            perf["perf/loader_wait_share"] = min(1.0, self._wait / self._train_time)
        if self.gpu_memory and torch.cuda.is_available() and pl_module.device.type == "cuda":
            perf["perf/gpu_memory_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
        _log_perf(trainer, perf)
        if trainer.is_global_zero:
            log.info(self.line(trainer, epoch_time, perf))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.is_global_zero:
            self._log_checkpoint(trainer)

    def line(self, trainer: L.Trainer, epoch_time: float, perf: dict[str, float]) -> str:
        """``epoch 3/12 | train/loss 1.2345 | val/f1_macro 0.4567 (best 0.5000) | lr 0.01 |
        120.5 img/s, loader wait 12% | 24.3 s | ETA 3m10s``."""
        metrics = trainer.callback_metrics
        parts = [f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"]
        loss = metrics.get(key("train", "loss_epoch"), metrics.get(key("train", "loss")))
        if loss is not None:
            parts.append(f"{key('train', 'loss')} {float(loss):.4f}")
        checkpointing = best_checkpointing(trainer)
        monitor = getattr(checkpointing, "monitor", None) or pl_module_monitor(trainer)
        if monitor and monitor in metrics:
            value = float(metrics[monitor])
            pick = min if getattr(checkpointing, "mode", "max") == "min" else max
            self._best = value if self._best is None else pick(self._best, value)
            parts.append(f"{monitor} {value:.4f} (best {self._best:.4f})")
        lr = _lr(trainer)
        if lr is not None:
            parts.append(f"lr {lr:.3g}")
        if "perf/train_images_per_s" in perf:
            parts.append(
                f"{perf['perf/train_images_per_s']:.1f} img/s, "
                f"loader wait {100 * perf['perf/loader_wait_share']:.0f}%"
            )
        parts.append(f"{epoch_time:.1f} s")
        left = (trainer.max_epochs or 0) - trainer.current_epoch - 1
        if left > 0:
            mean = sum(self._epoch_times) / len(self._epoch_times)
            parts.append(f"ETA {duration(left * mean)}")
        return " | ".join(parts)

    def _log_checkpoint(self, trainer: L.Trainer) -> None:
        checkpointing = best_checkpointing(trainer)
        path = getattr(checkpointing, "best_model_path", "") or ""
        if path and path != self._best_path:
            score = checkpointing.best_model_score
            shown = f"{float(score):.4f}" if score is not None else "?"
            log.info("checkpoint: new best %s %s -> %s", checkpointing.monitor, shown, path)
        self._best_path = path

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch_times": self._epoch_times,
            "lr": self._lr,
            "best": self._best,
            "best_path": self._best_path,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._epoch_times = list(state_dict.get("epoch_times", []))
        self._lr = state_dict.get("lr")
        self._best = state_dict.get("best")
        self._best_path = state_dict.get("best_path", "")


def _log_perf(trainer: L.Trainer, values: dict[str, float]) -> None:
    """Straight to the loggers (rank 0), not to ``callback_metrics``: timings are not results,
    and must not make two otherwise identical runs' ``metrics.json`` differ."""
    if values and trainer.is_global_zero:
        for logger in trainer.loggers:
            logger.log_metrics(values, step=trainer.global_step)


def pl_module_monitor(trainer: L.Trainer) -> str | None:
    """The metric the model's LR scheduler watches (its ``monitor`` hyperparameter)."""
    module = trainer.lightning_module
    return getattr(getattr(module, "hparams", None), "monitor", None)


def _lr(trainer: L.Trainer) -> float | None:
    """The first parameter group's learning rate."""
    if not trainer.optimizers:
        return None
    return float(trainer.optimizers[0].param_groups[0]["lr"])
