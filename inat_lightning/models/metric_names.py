"""The metric names, in one place: what the classifier logs (``<stage>/<metric>``), what the
sweep summary, the report, the HPARAMS tab and the logs show, and what a sweeper may optimise.
Names only (no torch): the sweep summary, which Hydra runs after every command, the scrape
included, and the demo's own process import them in a blink."""

from __future__ import annotations

from inat_lightning.data.taxonomy import METRIC_RANKS

#: the share of mistakes within the lowest metric rank (the genus)
WITHIN_SHARE = f"within_{METRIC_RANKS[0]}_share"

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
TAXONOMY_SCALARS = (*(f"acc_{r}" for r in METRIC_RANKS), WITHIN_SHARE)
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
    """A name a sweeper may optimise: ``<stage>/<scalar>`` or ``best/<stage>/<scalar>``, the
    scalar a built-in or a macro metric you registered (only then is torch imported)."""
    stage, _, metric = name.removeprefix("best/").partition("/")
    if stage not in STAGES:
        return False
    if metric in (*SCALARS, *TAXONOMY_SCALARS):
        return True
    from inat_lightning.models.confusion import PAIR_SCORES  # a macro metric you registered

    return metric in PAIR_SCORES
