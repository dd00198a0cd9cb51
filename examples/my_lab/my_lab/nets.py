"""The lab's backbone: a small CNN for its 48 px camera-trap crops. Registered by an entry point
(``pyproject.toml``), it is picked by name (``model.backbone=LabNet``), and a checkpoint that
names it loads wherever this package is installed — and nowhere else."""

from __future__ import annotations

import torch
from torch import nn


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class LabNet(nn.Module):
    """Three stride-2 blocks (``layer1``–``layer3``: ``cam.target_layer=layer3`` works as for a
    ResNet), global pooling and the head ``fc``, as the project's backbones end.

    Args:
        num_classes: outputs of the head.
        width: channels of the first block (doubled by each next one).
    """

    def __init__(self, num_classes: int, width: int = 16) -> None:
        super().__init__()
        if width < 1:
            raise ValueError(f"width={width}: must be >= 1")
        self.layer1 = _block(3, width)
        self.layer2 = _block(width, 2 * width)
        self.layer3 = _block(2 * width, 4 * width)
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))
