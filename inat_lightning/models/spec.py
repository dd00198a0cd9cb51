"""What a checkpoint carries so that whoever holds it alone can use it the way it was trained
(like timm's ``pretrained_cfg``): how its inputs are made (:class:`InputSpec`) and a
fingerprint of the data it learned from. Class names, lineages and the softmax temperature live
in the checkpoint too (see :class:`~inat_lightning.models.classifier.Classifier`).

A command may change the input spec only explicitly (``preprocess.image_size=…``), with a
warning; a ``data.*`` value that contradicts it is an error naming the key."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, MutableMapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from torchvision.transforms import v2

from inat_lightning.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    box_after_eval,
    eval_transform,
)

log = logging.getLogger(__name__)

#: what ``preprocess.*`` may change, and the ``data.*`` key that says the same at training
OVERRIDABLE = {"image_size": "image_size", "crop_ratio": "eval_crop_ratio"}


@dataclass(frozen=True)
class InputSpec:
    """How a photo becomes the network's input: resize the short side to
    ``image_size / crop_ratio``, centre-crop ``image_size``, scale to [0, 1], normalise with
    ``mean``/``std``; channels in ``channels`` order, NCHW float32."""

    image_size: int
    crop_ratio: float = 0.875
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    channels: str = "RGB"

    def __post_init__(self) -> None:
        size, ratio = self.image_size, self.crop_ratio
        if isinstance(size, bool) or not isinstance(size, int) or size < 16:
            raise ValueError(f"image_size={size!r}: must be an integer >= 16")
        if not isinstance(ratio, int | float) or not 0 < ratio <= 1:
            raise ValueError(f"crop_ratio={ratio!r}: must be in (0, 1]")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not (
                isinstance(value, Sequence)
                and not isinstance(value, str)
                and len(value) == 3
                and all(isinstance(v, int | float) and math.isfinite(v) for v in value)
            ):
                raise ValueError(f"{name}={value!r}: must be three finite numbers")
            object.__setattr__(self, name, tuple(float(v) for v in value))
        if min(self.std) <= 0:
            raise ValueError(f"std={self.std}: must be positive")
        if self.channels != "RGB":
            raise ValueError(f"channels={self.channels!r}: only RGB is supported")
        object.__setattr__(self, "crop_ratio", float(ratio))

    def transform(self) -> v2.Compose:
        """The eval transform this spec describes."""
        return eval_transform(self.image_size, self.crop_ratio, self.mean, self.std)

    def box(
        self, box: tuple[float, float, float, float], width: int, height: int
    ) -> tuple[float, float, float, float]:
        """A box in a photo's pixels, in the network input's pixels."""
        return box_after_eval(box, width, height, self.image_size, self.crop_ratio)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists, not tuples): a checkpoint loads with ``weights_only=True``."""
        found = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in found.items()}

    @classmethod
    def from_dict(cls, found: Mapping[str, Any], where: str) -> InputSpec:
        """A spec read from a file that may come from anyone: known keys only, values checked;
        a :class:`ValueError` naming ``where``."""
        if not isinstance(found, Mapping):
            raise ValueError(f"{where}: input spec is not a mapping: {found!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(found) - known)
        if unknown:
            raise ValueError(f"{where}: unknown input spec key(s) {unknown}")
        try:
            return cls(**dict(found))
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from e

    def overridden(self, changes: Mapping[str, Any], key: str = "preprocess") -> InputSpec:
        """This spec with the non-null values of ``changes`` (``preprocess.*``), each change
        logged as a warning: an explicit override, never a silent one."""
        unknown = sorted(set(changes) - set(OVERRIDABLE))
        if unknown:
            raise ValueError(f"{key}.{unknown[0]}: unknown key (known: {sorted(OVERRIDABLE)})")
        new = {k: v for k, v in changes.items() if v is not None and v != getattr(self, k)}
        for name, value in new.items():
            log.warning(
                "%s.%s=%s overrides the checkpoint's %s: the model was trained with another "
                "preprocessing",
                key,
                name,
                value,
                getattr(self, name),
            )
        try:
            return replace(self, **new) if new else self
        except (TypeError, ValueError) as e:
            raise ValueError(f"{key}.{e}") from e


def resolve_spec(spec: InputSpec | None, changes: Mapping[str, Any]) -> InputSpec:
    """The input spec a command uses: the checkpoint's, with the explicit ``preprocess.*``
    ``changes`` (warned). A checkpoint made before input specs needs both values given."""
    if spec is not None:
        return spec.overridden(changes)
    missing = [k for k in OVERRIDABLE if changes.get(k) is None]
    if missing:
        raise ValueError(
            f"preprocess.{missing[0]}: the checkpoint does not say how its inputs were made (made "
            "before input specs): give preprocess.image_size and preprocess.crop_ratio"
        )
    return InputSpec(image_size=changes["image_size"], crop_ratio=changes["crop_ratio"])


def pin_input_spec(
    data: MutableMapping[str, Any], spec: InputSpec, changed: Mapping[str, Any]
) -> None:
    """Set a data config's preprocessing keys (``image_size``, ``eval_crop_ratio``) to ``spec``'s.
    A value the command itself set (``changed``: its ``data.*`` keys) that contradicts the spec
    is a ``ValueError`` naming the key (``preprocess.*`` changes the spec explicitly)."""
    for name, data_key in OVERRIDABLE.items():
        wanted = getattr(spec, name)
        if data_key in changed and changed[data_key] != wanted:
            raise ValueError(
                f"data.{data_key}={changed[data_key]}: contradicts the checkpoint's input spec "
                f"({name}={wanted}); to use another preprocessing say "
                f"preprocess.{name}={changed[data_key]}"
            )
        data[data_key] = wanted
