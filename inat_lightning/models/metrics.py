"""The metrics the classifier logs, built from the names in
:mod:`inat_lightning.models.metric_names`, and reading them back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from inat_lightning.models.confusion import PAIR_SCORES, ConfusionPairs, PairScore


def build_metrics(
    num_classes: int, pairs: ConfusionPairs | None = None, prefix: str = ""
) -> MetricCollection:
    """The scalar metrics of one stage, named as in
    :data:`~inat_lightning.models.metric_names.SCALARS` (the loss is logged apart);
    top-K only with at least K classes. The macro scores come from the per-photo
    ``pairs`` (:class:`~inat_lightning.models.confusion.ConfusionPairs`, made here when not
    given; the collection's first feeds them): nothing is ``K × K``, at any ``K``. Every
    registered macro score is logged (:data:`~inat_lightning.models.confusion.PAIR_SCORES`)."""
    pairs = pairs if pairs is not None else ConfusionPairs(num_classes)
    metrics: dict[str, Any] = {"acc": MulticlassAccuracy(num_classes, average="micro")}
    for k in (3, 5):
        if num_classes >= k:
            metrics[f"top{k}"] = MulticlassAccuracy(num_classes, top_k=k, average="micro")
    for i, name in enumerate(PAIR_SCORES.names()):  # the first feeds the shared pairs
        if name in metrics or name == "loss":
            raise ValueError(f"macro metric {name!r}: the name of a built-in metric")
        metrics[name] = PairScore(pairs, name, owner=i == 0)
    # no compute groups: the pair scores hold no state of their own to share or compare
    # (not cloned later: a copy would read a copy of the pairs)
    return MetricCollection(metrics, prefix=prefix or None, compute_groups=False)


def scalar_metrics(logged: Mapping[str, Any]) -> dict[str, float]:
    """The one-number entries of a trainer's ``callback_metrics``, as floats, sorted by name."""
    return {k: float(v) for k, v in sorted(logged.items()) if v.numel() == 1}
