"""Reading what a run wrote to TensorBoard."""

from __future__ import annotations

from pathlib import Path


def tensorboard_tags(run_dir: Path) -> dict[str, dict[str, list]]:
    """Every scalar, image and tensor event under a run dir, by kind and tag."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, dict[str, list]] = {"scalars": {}, "images": {}, "tensors": {}}
    for f in sorted(run_dir.rglob("events.out.tfevents.*")):
        ea = EventAccumulator(str(f), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
        ea.Reload()
        for kind, get in (("scalars", ea.Scalars), ("images", ea.Images), ("tensors", ea.Tensors)):
            for tag in ea.Tags()[kind]:
                out[kind].setdefault(tag, []).extend(get(tag))
    return out
