"""A user's own choices, as their installed package would provide them by entry points
(``tests/house/test_registry.py`` writes the dist-info): a CAM method, a cue detector, an out-of-set
score and a macro metric. Nothing here is in the project's own registries until then."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pytorch_grad_cam import GradCAM

from inat_lightning.analysis.detect import Detection
from inat_lightning.models.confusion import Confusion
from inat_lightning.models.open_set import OpenSetScore


class MarkedGradCAM(GradCAM):
    """Grad-CAM that appends a line to the file ``$OWN_PLUGIN_MARK`` names each time it is
    built: proof that a command used it."""

    def __init__(self, *args, **kwargs) -> None:
        mark = os.environ.get("OWN_PLUGIN_MARK")
        if mark:
            with Path(mark).open("a") as f:
                f.write("built\n")
        super().__init__(*args, **kwargs)


class CornerDetector:
    """Finds a "corner" cue in the top-left quarter of every photo."""

    name = "corner-detector"

    def __call__(self, photo: Image.Image) -> list[Detection]:
        w, h = photo.size
        return [Detection("corner", (0.0, 0.0, w / 4, h / 4), 1.0)]


def _margin(z: torch.Tensor, temperature: float) -> torch.Tensor:
    top = z.topk(2, dim=1).values
    return top[:, 0] - top[:, 1]


#: the gap between the two largest tempered logits: never negative
MARGIN = OpenSetScore(_margin, 0.0, float("inf"))


def balanced_error(confusion: Confusion) -> float:
    """1 - the mean recall over the classes with photos."""
    _, recall, _ = confusion.precision_recall_f1()
    return float(1 - np.mean(recall[confusion.support > 0]))
