"""Backbones: the torchvision ResNet factory (depth from config, head sized from the data, local
weights), and :data:`BACKBONES`, where a backbone of one's own package is named
(``model.backbone=LabNet``, by an ``inat_lightning.backbones`` entry point)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision import models

from inat_lightning.registry import Registry

log = logging.getLogger(__name__)
RESNET_DEPTHS = (18, 34, 50, 101, 152)
#: backbones by name (``model.backbone``): ``resnet`` built in; a checkpoint names its backbone
#: here, so a shared file can only pick one that is installed. A backbone is called with
#: ``num_classes`` and ``model.backbone_args``, and ends in its head, ``fc`` (an ``nn.Linear``),
#: as torchvision's ResNets do. Its arguments are kept in the checkpoint and passed back when it
#: loads (a file from anyone): they must be settings (sizes, widths), never a path or URL read.
BACKBONES: Registry = Registry(
    "backbone", "model.backbone", "backbones", builtins=f"{__name__}:_builtin_backbones"
)


def _builtin_backbones() -> dict[str, Any]:
    return {"resnet": resnet}


def build_backbone(
    name: str, num_classes: int, args: Mapping[str, Any] | None, **resnet_args: Any
) -> nn.Module:
    """The network ``name`` (:data:`BACKBONES`) with a ``num_classes``-way head: ``resnet`` with
    ``resnet_args`` (depth, weights…), another with ``args``; a ``ValueError`` naming
    ``model.backbone`` when it is unknown or has no ``fc`` head of that size."""
    factory = BACKBONES.get(name)
    if factory is resnet:
        if args:
            raise ValueError(f"backbone_args={dict(args)}: the resnet backbone takes depth etc.")
        return resnet(num_classes=num_classes, **resnet_args)
    for key in ("weights", "weights_path"):
        if resnet_args.get(key):
            raise ValueError(f"{key}={resnet_args[key]!r}: loads into the resnet backbone only")
    net = factory(num_classes=num_classes, **dict(args or {}))
    head = getattr(net, "fc", None)
    if not isinstance(head, nn.Linear) or head.out_features != num_classes:
        raise ValueError(
            f"backbone={name!r}: must end in fc, an nn.Linear with {num_classes} outputs "
            f"(found {type(head).__name__})"
        )
    return net


def check_resnet_args(
    depth: int = 101, weights: str | None = None, weights_path: str | Path | None = None
) -> None:
    """The rules of :func:`resnet`'s arguments, also run on the config before any work."""
    if depth not in RESNET_DEPTHS:
        raise ValueError(f"depth={depth}: must be one of {RESNET_DEPTHS}")
    if weights and weights_path:
        raise ValueError("weights: set either weights or weights_path, not both")
    if weights_path and not Path(weights_path).is_file():
        raise FileNotFoundError(f"weights_path={str(weights_path)!r}: no such file")


def resnet(
    depth: int = 101,
    num_classes: int = 1000,
    weights: str | None = None,
    weights_path: str | Path | None = None,
    zero_init_residual: bool = False,
) -> models.ResNet:
    """A torchvision ResNet with a ``num_classes``-way head.

    Args:
        depth: 18, 34, 50, 101 or 152.
        num_classes: outputs of the new head.
        weights: a torchvision weights name (``"IMAGENET1K_V2"``, ``"DEFAULT"``); downloads on
            first use, so only where the machine can reach download.pytorch.org.
        weights_path: a local file with a state dict (a torchvision ``.pth``, or a Lightning
            checkpoint of this project); every tensor whose name and shape match is loaded, the
            classification head is left fresh when its size differs.
        zero_init_residual: start every residual branch at zero (last BN weight = 0), so a deep
            net trained from scratch starts as a shallow one. Measured here on the synthetic set:
            it steadies ResNet101 from scratch, but slows ResNet18 down a lot.
    """
    check_resnet_args(depth, weights, weights_path)
    builder = getattr(models, f"resnet{depth}")
    net = builder(weights=weights) if weights else builder(zero_init_residual=zero_init_residual)
    net.fc = nn.Linear(net.fc.in_features, num_classes)
    if weights_path:
        load_matching(net, weights_path)
    return net


def load_tensors(path: str | Path, key: str, mmap: bool = False) -> Any:
    """``torch.load`` of a file that may come from someone else: tensors and plain values only
    (``weights_only=True``: nothing in it can run code). ``ValueError`` naming ``key`` when it
    is truncated, foreign or carries code. ``mmap``: tensors are read only when used."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:  # noqa: BLE001 - any failure to read is this file's fault
        raise ValueError(
            f"{key}={str(path)!r}: not readable as tensors (truncated, or it holds more than "
            f"tensors and plain values, which is refused): {type(e).__name__}: {str(e)[:200]}"
        ) from e


def checked_state_dict(found: object, where: str) -> dict[str, torch.Tensor]:
    """A state dict read from a file that may come from anyone: tensors under text names (an
    ``int`` key breaks ``load_state_dict`` with a traceback); else a ``ValueError`` naming
    ``where``."""
    if not isinstance(found, Mapping):
        raise ValueError(f"{where}: not a state dict (names to tensors)")
    for name, value in found.items():
        if not isinstance(name, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"{where}: {name!r:.80} is not a tensor under a text name")
    return dict(found)


def load_matching(net: nn.Module, path: str | Path) -> list[str]:
    """Load the tensors of ``path`` whose names and shapes match ``net``; return the names skipped.

    Accepts a raw state dict or a checkpoint dict with ``state_dict`` (keys prefixed ``net.`` by
    this project's classifier are unprefixed).
    """
    path = Path(path)
    check_resnet_args(weights_path=path)
    state = load_tensors(path, "weights_path")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    state = checked_state_dict(state, f"weights_path={str(path)!r}")
    state = {k.removeprefix("net."): v for k, v in state.items()}
    own = net.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise ValueError(f"weights_path={str(path)!r}: no tensor matches this network")
    net.load_state_dict(usable, strict=False)
    skipped = sorted(set(own) - set(usable))
    log.info("loaded %d tensors from %s; kept fresh: %s", len(usable), path, skipped or "none")
    return skipped
