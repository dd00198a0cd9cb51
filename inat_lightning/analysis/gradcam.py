"""Grad-CAM with pytorch-grad-cam: batched CAMs and overlays, leaving the model as it was.

cams = compute_cams(model.net, images, targets=[3, 5, ...])       # (N, H, W) in [0, 1]
cams = compute_cams(model.net, images, targets, CamSetting("EigenCAM", "layer4"))
pictures = blend(photos01, cams, style="red")                      # (N, H, W, 3) in [0, 1]

``score="finer"`` explains a class *against the classes the model finds closest to it* (its
look-alikes; Finer-CAM, pytorch-grad-cam's ``FinerWeightedTarget``) instead of the class score
alone: what tells *Piscis striatus* from *P. punctatus*, not what makes both a fish.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
import numpy as np
import pytorch_grad_cam
import torch
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget, FinerWeightedTarget
from torch import nn

from inat_lightning.registry import Registry

STYLES = ("red", "colormap")
FINER_COMPARISONS = 3  # Finer-CAM's default: the three classes whose logits are closest


class FinerTarget:
    """Finer-CAM's target for class ``c``, its comparison classes read off the model output
    being explained (no second forward pass): the :data:`FINER_COMPARISONS` classes whose logits
    are closest to ``c``'s, weighted by their probability (pytorch-grad-cam's
    ``FinerWeightedTarget``)."""

    def __init__(self, c: int) -> None:
        self.c = c

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        gap = (output - output[self.c]).detach().abs()
        gap[self.c] = float("inf")
        closest = gap.argsort()[: min(FINER_COMPARISONS, len(output) - 1)].tolist()
        return FinerWeightedTarget(self.c, closest, alpha=1.0)(output)


#: what a CAM explains (``cam.score``): a class name to a pytorch-grad-cam target factory
CAM_TARGETS: Registry[Callable[[int], Callable[[torch.Tensor], torch.Tensor]]] = Registry(
    "CAM target", "cam.score", "cam_targets"
)
CAM_TARGETS.register("class", ClassifierOutputTarget)
CAM_TARGETS.register("finer", FinerTarget)


def _grad_cam_classes() -> dict[str, type]:
    """pytorch-grad-cam's CAM classes by name: the built-ins of :data:`CAM_METHODS`."""
    base = pytorch_grad_cam.base_cam.BaseCAM
    found = {n: getattr(pytorch_grad_cam, n) for n in dir(pytorch_grad_cam)}
    return {n: c for n, c in found.items() if isinstance(c, type) and issubclass(c, base)}


#: the CAM algorithm (``cam.method``): every pytorch-grad-cam ``BaseCAM`` class, and yours
CAM_METHODS: Registry[Callable[..., pytorch_grad_cam.base_cam.BaseCAM]] = Registry(
    "CAM method", "cam.method", "cam_methods", builtins=f"{__name__}:_grad_cam_classes"
)


@dataclass(frozen=True)
class CamSetting:
    """How every explanation is made (the ``cam`` config node, shared by the training
    galleries, ``evaluate.py``'s galleries and cue audit, and ``predict.py``'s overlays).

    Args:
        method: a :data:`CAM_METHODS` name (``GradCAM``, ``GradCAMPlusPlus``, ``EigenCAM``…).
        target_layer: dotted name of the layer explained (:func:`resolve_layer`): ``layer3``
            gives twice ``layer4``'s map resolution, worth it at the small sizes photos are
            trained at here.
        score: a :data:`CAM_TARGETS` name: ``class`` (the class score) or ``finer`` (that class
            against the classes the model finds closest to it).
    """

    method: str = "GradCAM"
    target_layer: str = "layer3"
    score: str = "class"

    def __post_init__(self) -> None:
        CAM_METHODS.check(self.method, "method")
        CAM_TARGETS.check(self.score, "score")


def cam_targets(classes: Sequence[int], score: str = "class") -> list:
    """The pytorch-grad-cam targets explaining ``classes[i]`` as :data:`CAM_TARGETS` ``score``
    says: its class score (``class``), or that class against its closest alternatives
    (``finer``: :class:`FinerTarget`)."""
    target = CAM_TARGETS.get(score)
    return [target(int(c)) for c in classes]


def resolve_layer(net: nn.Module, name: str) -> nn.Module:
    """A layer by dotted name; a ``Sequential`` stage means its last block. ``layer4`` (the
    last ResNet block) is the usual Grad-CAM layer; ``layer3`` doubles the map's resolution,
    worth it for small inputs (a 64 px image gives a 2×2 ``layer4`` map)."""
    try:
        layer = net.get_submodule(name)
    except AttributeError as e:
        raise ValueError(f"target_layer={name!r}: no such layer in {type(net).__name__}") from e
    return layer[-1] if isinstance(layer, nn.Sequential) else layer


@contextmanager
def untouched(net: nn.Module) -> Iterator[None]:
    """Restore train/eval mode, ``requires_grad`` and ``.grad`` of every parameter afterwards:
    CAMs need a backward pass, which must not leak into training. Inside, parameters don't
    require grad, so the backward pass computes activation gradients only (no weight gradients:
    about a third less work)."""
    modes = {m: m.training for m in net.modules()}
    params = {p: (p.requires_grad, p.grad) for p in net.parameters()}
    try:
        for p in params:
            p.requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for m, mode in modes.items():
            m.train(mode)
        for p, (req, grad) in params.items():
            p.requires_grad_(req)
            p.grad = grad


def compute_cams(
    net: nn.Module,
    images: torch.Tensor,
    targets: Sequence[int],
    cam: CamSetting = CamSetting(),
    batch_size: int = 32,
) -> np.ndarray:
    """CAMs of ``images`` (normalised ``(N, 3, H, W)``) for class ``targets[i]``, made as
    ``cam`` says, computed a batch at a time; returns ``(N, H, W)`` float32 in [0, 1]."""
    layer = resolve_layer(net, cam.target_layer)
    out = []
    method = CAM_METHODS.get(cam.method)
    with untouched(net), method(model=net, target_layers=[layer]) as explainer:
        for start in range(0, len(images), batch_size):
            x = (
                images[start : start + batch_size]
                .detach()
                .clone()
                .to(next(net.parameters()).device)
                .requires_grad_(True)  # parameters don't: gradients flow through activations only
            )
            t = cam_targets(targets[start : start + batch_size], cam.score)
            out.append(explainer(input_tensor=x, targets=t))
    return (
        np.concatenate(out).astype(np.float32)
        if out
        else np.zeros((0, *images.shape[2:]), np.float32)
    )


def heatmap(cams: np.ndarray, style: str = "red") -> np.ndarray:
    """``(N, H, W)`` CAMs → ``(N, H, W, 3)`` RGB heatmaps in [0, 1].

    ``red``: a red-only heatmap, red = CAM, green = blue = 0. ``colormap``: matplotlib's ``jet``.
    """
    if style == "red":
        heat = np.zeros((*cams.shape, 3), np.float32)
        heat[..., 0] = cams
        return heat
    if style == "colormap":
        return matplotlib.colormaps["jet"](cams)[..., :3].astype(np.float32)
    raise ValueError(f"style={style!r}: must be one of {STYLES}")


def blend(
    photos01: np.ndarray, cams: np.ndarray, style: str = "red", alpha: float = 0.5
) -> np.ndarray:
    """Heatmaps over photos, ``(N, H, W, 3)`` in [0, 1]: ``(1 - alpha) * photo + alpha *
    heatmap``."""
    return np.clip((1 - alpha) * photos01 + alpha * heatmap(cams, style), 0, 1)


def energy_in_box(cam: np.ndarray, box: tuple[float, float, float, float]) -> tuple[float, float]:
    """Share of the CAM's energy inside a box ``(x0, y0, x1, y1)`` given in the CAM's pixels, and
    the box's share of the area (the energy-based pointing game: > area share = attends to it)."""
    h, w = cam.shape
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, x1 = max(0, min(w, x0)), max(0, min(w, x1))
    y0, y1 = max(0, min(h, y0)), max(0, min(h, y1))
    total = float(cam.sum())
    inside = float(cam[y0:y1, x0:x1].sum())
    return (inside / total if total > 0 else 0.0), (x1 - x0) * (y1 - y0) / (h * w)
