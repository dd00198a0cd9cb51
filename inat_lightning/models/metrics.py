"""The metric names, in one place: what the classifier logs (``<stage>/<metric>``), what the
sweep summary, the report, the HPARAMS tab and the logs show, and what a sweeper may optimise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from inat_lightning.models.confusion import ConfusionPairs, PairScore

STAGES = ("train", "val", "test")
#: every scalar the classifier logs per stage (``topK`` only with at least K classes; top-3 is
#: what iNaturalist's own vision training reports beside top-1 and top-10)
SCALARS = (
    "loss",
    "acc",
    "acc_macro",
    "top3",
    "top5",
    "f1_macro",
    "precision_macro",
    "recall_macro",
)
#: logged when the dataset has a taxonomy (``taxa.csv``): accuracy one and two ranks up, and
#: the share of mistakes that stay within the genus
TAXONOMY_SCALARS = ("acc_genus", "acc_family", "within_genus_share")
#: the few that sum a run up: sweep summary, HPARAMS tab, the last log lines
HEADLINE = ("acc", "acc_macro", "f1_macro")
#: what checkpointing, the LR scheduler and early stopping watch by default
MONITOR = "val/f1_macro"


def key(stage: str, metric: str) -> str:
    """``val``, ``f1_macro`` → ``val/f1_macro``: the name logged to Lightning and TensorBoard."""
    return f"{stage}/{metric}"


def headline(*stages: str) -> tuple[str, ...]:
    """The :data:`HEADLINE` metrics of ``stages``, e.g. ``headline("val", "test")``."""
    return tuple(key(s, m) for s in stages for m in HEADLINE)


def is_optimizable(name: str) -> bool:
    """A name a sweeper may optimise: ``<stage>/<scalar>`` or ``best/<stage>/<scalar>``."""
    stage, _, metric = name.removeprefix("best/").partition("/")
    return stage in STAGES and metric in (*SCALARS, *TAXONOMY_SCALARS)


def build_metrics(
    num_classes: int, pairs: ConfusionPairs | None = None, prefix: str = ""
) -> MetricCollection:
    """The scalar metrics of one stage, named as in :data:`SCALARS` (the loss is logged apart);
    top-K only with at least K classes. The macro scores come from the per-photo
    ``pairs`` (:class:`~inat_lightning.models.confusion.ConfusionPairs`, made here when not
    given; the collection's ``acc_macro`` feeds them): nothing is ``K × K``, at any ``K``."""
    pairs = pairs if pairs is not None else ConfusionPairs(num_classes)
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, average="micro"),
        "acc_macro": PairScore(pairs, "acc_macro", owner=True),
        "f1_macro": PairScore(pairs, "f1_macro"),
        "precision_macro": PairScore(pairs, "precision_macro"),
        "recall_macro": PairScore(pairs, "recall_macro"),
    }
    for k in (3, 5):
        if num_classes >= k:
            metrics[f"top{k}"] = MulticlassAccuracy(num_classes, top_k=k, average="micro")
    # no compute groups: the pair scores hold no state of their own to share or compare
    # (not cloned later: a copy would read a copy of the pairs)
    return MetricCollection(metrics, prefix=prefix or None, compute_groups=False)


def scalar_metrics(logged: Mapping[str, Any]) -> dict[str, float]:
    """The one-number entries of a trainer's ``callback_metrics``, as floats, sorted by name."""
    return {k: float(v) for k, v in sorted(logged.items()) if v.numel() == 1}
