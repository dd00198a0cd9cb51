"""Calibrated confidence: temperature scaling (Guo et al., 2017) and the expected calibration
error (ECE). A network trained with cross-entropy is often over-confident: 0.95 that is right
80 % of the time. One scalar ``T`` fitted on the validation split (``softmax(logits / T)``)
fixes most of it without changing any prediction's rank."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

#: the temperatures a fit gives (it clamps to them): what a checkpoint may hold. Outside,
#: ``softmax(logits / T)`` is all but one-hot (``T`` near 0) or all but flat.
TEMPERATURE_RANGE = (0.05, 20.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The temperature minimising the negative log-likelihood of ``labels`` under
    ``softmax(logits / T)``; optimised on ``log T`` with L-BFGS, clamped to
    :data:`TEMPERATURE_RANGE`."""
    low, high = TEMPERATURE_RANGE
    logits, labels = logits.detach().float().cpu().clone(), labels.detach().long().cpu().clone()
    log_t = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")
    loss_fn = nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    with torch.enable_grad():
        try:
            optimizer.step(closure)
        except RuntimeError:  # an overflow in the line search: extreme logits
            return (
                high
                if float(loss_fn(logits, labels)) > float(loss_fn(logits / high, labels))
                else 1.0
            )
    t = float(log_t.detach().exp())
    return min(max(t, low), high) if math.isfinite(t) else 1.0


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> list[dict[str, float]]:
    """Per confidence bin (equal width on [0, 1]): its range, mean confidence, accuracy and
    count (empty bins left out). Confidence is the top-1 probability."""
    probs, labels = np.asarray(probs, dtype=float), np.asarray(labels)
    confidence, predicted = probs.max(1), probs.argmax(1)
    correct = predicted == labels
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    out = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            out.append(
                {
                    "low": float(edges[b]),
                    "high": float(edges[b + 1]),
                    "confidence": float(confidence[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return out


def ece(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error: the count-weighted mean gap between confidence and accuracy
    over the bins of :func:`reliability`."""
    rows = reliability(probs, labels, bins)
    total = sum(r["count"] for r in rows)
    return sum(r["count"] * abs(r["confidence"] - r["accuracy"]) for r in rows) / max(total, 1)


def scores(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> dict:
    """``nll`` and ``ece`` of ``softmax(logits / temperature)`` against ``labels``."""
    return {
        "nll": float(nn.functional.cross_entropy(logits / temperature, labels)),
        "ece": ece(softmax(logits, temperature), labels.numpy()),
    }


def softmax(logits: torch.Tensor | np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of ``logits / temperature``, as a NumPy array."""
    return torch.softmax(torch.as_tensor(logits).float() / temperature, dim=-1).numpy()
