"""A deployable model: the network as a ``torch.export`` program (``model.pt2``, loadable with
``torch.export.load`` and no code of this project) and ``model.json`` beside it with what a user
needs to call it — class names, preprocessing, the softmax temperature.

    program = torch.export.load("model.pt2").module()
    probabilities = torch.softmax(program(x) / meta["temperature"], dim=1)

An exported program is code to run: load only files you made or trust (unlike checkpoints,
which this project reads as tensors only)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch

from inat_lightning.atomic import replacing
from inat_lightning.data.spec import InputSpec
from inat_lightning.models.classifier import Classifier

PROGRAM_NAME, META_NAME = "model.pt2", "model.json"


def export_model(model: Classifier, out_dir: str | Path, spec: InputSpec) -> tuple[Path, Path]:
    """Write ``model.pt2`` (batch size dynamic, 1 to 4096) and ``model.json`` into
    ``out_dir``; returns both paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model.net).float().eval().cpu()
    example = torch.randn(2, 3, spec.image_size, spec.image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    with replacing(out / PROGRAM_NAME) as part:  # a kill mid-save leaves no corrupt model.pt2
        torch.export.save(program, part)
    meta: dict[str, Any] = {
        "format": "torch.export (torch.export.load(path).module()(x) -> logits)",
        "class_names": model.class_names,
        "temperature": model.temperature,
        "input": {
            "layout": f"NCHW float32, {spec.channels}",
            "resize_short_side": round(spec.image_size / spec.crop_ratio),
            "center_crop": spec.image_size,
            "scale": "pixel values / 255",
            "mean": list(spec.mean),
            "std": list(spec.std),
            "spec": spec.to_dict(),
        },
        "output": "logits; probabilities = softmax(logits / temperature)",
        "torch": torch.__version__,
    }
    with replacing(out / META_NAME) as part:
        part.write_text(json.dumps(meta, indent=2))
    return out / PROGRAM_NAME, out / META_NAME


@torch.no_grad()
def compare_export(
    program_path: str | Path, model: Classifier, images: torch.Tensor, atol: float = 1e-4
) -> dict[str, Any]:
    """Run the exported program and the checkpoint's network on the same ``images``: same top-1
    everywhere and probabilities within ``atol``? Returns the figures and ``ok``."""
    program = torch.export.load(str(program_path)).module()
    net = model.net.float().eval().cpu()
    t = model.temperature
    ours = torch.softmax(net(images) / t, dim=1)
    theirs = torch.softmax(program(images) / t, dim=1)
    gap = float((ours - theirs).abs().max()) if len(images) else 0.0
    same_top1 = bool((ours.argmax(1) == theirs.argmax(1)).all())
    return {
        "images": len(images),
        "max_prob_gap": gap,
        "same_top1": same_top1,
        "ok": same_top1 and gap <= atol,
    }
