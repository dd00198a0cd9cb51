"""How a photo becomes the network's input (:class:`InputSpec`): built once by the data module
from its settings, kept in the checkpoint (like timm's ``pretrained_cfg``), and used as is by
evaluate, predict, the export and the bias audit, so a model is always fed as it was trained.

A command may change it only explicitly (``preprocess.image_size=…``), with a warning: see
:mod:`inat_lightning.models.spec`."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
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

#: what ``preprocess.*`` may change; the data config's keys of the same names say it at training
OVERRIDABLE = ("image_size", "crop_ratio")


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
