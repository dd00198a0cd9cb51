"""The lab's CAM method: Grad-CAM with its map squared, so that the peak stands out in the
overlays its people read. Registered by an entry point (``pyproject.toml``), it is picked like a
built-in: ``inat-predict ... cam.method=LabCAM``."""

from __future__ import annotations

from typing import Any

import numpy as np
from pytorch_grad_cam import GradCAM


class LabCAM(GradCAM):
    """:class:`pytorch_grad_cam.GradCAM`, its map squared (one hook overridden)."""

    def get_cam_image(self, *args: Any, **kwargs: Any) -> np.ndarray:
        return np.square(super().get_cam_image(*args, **kwargs))
