"""Cue detectors: boxes of people (the angler holding the fish) and other configured objects in
a photo, written to the manifest's ``cue_*`` columns (see :mod:`inat_lightning.data.cues`).

A detector is a :class:`Detector`: ``detector(photo) -> list[Detection]`` with a ``name`` (kept in
the manifest beside each box). The command line picks one from :data:`DETECTORS` by name; two are
built in:

* :class:`OpenCVPeople` (default; offline, because the OpenCV 4 wheel ships its models): Haar
  cascades for frontal faces and upper bodies, and the HOG people detector for whole standing
  people, merged into ``person`` boxes. It finds people who face the camera; it does not find
  hands alone. (OpenCV 5 wheels ship neither the cascades nor the HOG detector.)
* :class:`TorchvisionDetector`: a torchvision COCO detector (Faster R-CNN): ``person`` and the
  other 80 COCO classes (``boat``, ``dog``, ``surfboard``…), much better on real photos; its
  weights are downloaded where the machine can (``weights=DEFAULT``) or read from a local file
  (``weights_path``, tensors only).

Measured quality on the photos scikit-image ships: docs/benchmarks.md (bench/bench_detect.py).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from inat_lightning.registry import Registry


@dataclass(frozen=True)
class Detection:
    label: str
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the photo's pixels
    score: float


class Detector(Protocol):
    """What a cue detector implements: boxes of the cues it finds in a photo, and a name."""

    name: str

    def __call__(self, photo: Image.Image) -> list[Detection]: ...


class OpenCVPeople:
    """People (faces, upper bodies, standing people) with the models the OpenCV 4 wheel ships.

    Args:
        min_size: smallest box side, as a share of the photo's shorter side.
        min_neighbors: Haar cascade votes a box needs (higher: fewer false boxes).
    """

    name = "opencv-people"
    labels = ("person",)

    def __init__(self, min_size: float = 0.08, min_neighbors: int = 5) -> None:
        import cv2

        folder = Path(getattr(getattr(cv2, "data", None), "haarcascades", "") or "")
        files = [folder / f"haarcascade_{n}.xml" for n in ("frontalface_default", "upperbody")]
        if not all(f.is_file() for f in files) or not hasattr(cv2, "HOGDescriptor"):
            raise RuntimeError(
                f"detector opencv: OpenCV {cv2.__version__} ships no Haar cascades or HOG "
                "people detector (OpenCV 5 dropped them): install opencv-python-headless<5, or "
                "use the torchvision detector with weights_path"
            )
        self.cv2 = cv2
        self.cascades = [cv2.CascadeClassifier(str(f)) for f in files]
        self.hog = cv2.HOGDescriptor()
        self.hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.min_size, self.min_neighbors = min_size, min_neighbors

    def __call__(self, photo: Image.Image) -> list[Detection]:
        rgb = np.asarray(photo.convert("RGB"))
        gray = self.cv2.equalizeHist(self.cv2.cvtColor(rgb, self.cv2.COLOR_RGB2GRAY))
        side = max(16, int(self.min_size * min(gray.shape)))
        found = []
        for cascade in self.cascades:
            boxes = cascade.detectMultiScale(
                gray, scaleFactor=1.1, minNeighbors=self.min_neighbors, minSize=(side, side)
            )
            found += [Detection("person", (x, y, x + w, y + h), 1.0) for x, y, w, h in boxes]
        if min(gray.shape) >= 128:  # the HOG window is 64 x 128
            boxes, weights = self.hog.detectMultiScale(gray, winStride=(8, 8), scale=1.05)
            found += [
                Detection("person", (x, y, x + w, y + h), float(s))
                for (x, y, w, h), s in zip(boxes, np.ravel(weights))
                if s > 0.5
            ]
        return [Detection(d.label, tuple(float(v) for v in d.box), d.score) for d in found]


class TorchvisionDetector:
    """A torchvision COCO detector keeping the configured classes.

    Args:
        labels: COCO class names to keep (``person``, ``boat``…).
        min_score: the detector's score from which a box is kept.
        architecture: a torchvision detection builder (``fasterrcnn_mobilenet_v3_large_fpn``,
            ``fasterrcnn_resnet50_fpn_v2``…).
        weights: ``DEFAULT`` downloads torchvision's COCO weights (cached); ``None`` with
            ``weights_path`` reads a local state dict (tensors only).
        weights_path: a local ``.pth`` state dict of that architecture.
        image_size: the short side the detector resizes a photo to (torchvision's ``min_size``,
            800 by default; the long side at most 5/3 of it): smaller is faster and misses
            smaller cues.
    """

    def __init__(
        self,
        labels: tuple[str, ...] = ("person",),
        min_score: float = 0.6,
        architecture: str = "fasterrcnn_mobilenet_v3_large_fpn",
        weights: str | None = "DEFAULT",
        weights_path: str | None = None,
        image_size: int = 800,
    ) -> None:
        from torchvision.models import detection, get_model_weights

        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 32:
            raise ValueError(f"image_size={image_size!r}: must be an integer >= 32")
        size = {"min_size": image_size, "max_size": image_size * 5 // 3}

        categories = get_model_weights(architecture).DEFAULT.meta["categories"]
        unknown = sorted(set(labels) - set(categories))
        if unknown:
            raise ValueError(f"labels: {unknown} are not COCO classes of {architecture}")
        builder = getattr(detection, architecture)
        if weights_path:
            from inat_lightning.models.backbones import load_tensors

            net = builder(weights=None, weights_backbone=None, **size)
            net.load_state_dict(load_tensors(Path(weights_path), "weights_path"))
        else:
            backbone = None if weights is None else "DEFAULT"
            net = builder(weights=weights, weights_backbone=backbone, **size)
        self.net = net.eval()
        self.categories, self.labels, self.min_score = categories, tuple(labels), min_score
        self.name = f"torchvision-{architecture}"

    @torch.no_grad()
    def __call__(self, photo: Image.Image) -> list[Detection]:
        x = torch.from_numpy(np.array(photo.convert("RGB"))).permute(2, 0, 1).float() / 255
        (out,) = self.net([x])
        return [
            Detection(self.categories[int(c)], tuple(float(v) for v in b), float(s))
            for b, c, s in zip(out["boxes"], out["labels"], out["scores"])
            if s >= self.min_score and self.categories[int(c)] in self.labels
        ]


#: the cue detectors by name (``cues detect --detector NAME``); yours by
#: ``DETECTORS.register`` or an ``inat_lightning.detectors`` entry point
DETECTORS: Registry[Callable[..., Detector]] = Registry("cue detector", "--detector", "detectors")
DETECTORS.register("opencv", OpenCVPeople)
DETECTORS.register("torchvision", TorchvisionDetector)


def build_detector(name: str, **options: Any) -> Detector:
    """The :data:`DETECTORS` entry ``name``, given those ``options`` its constructor takes
    (``labels``, ``weights_path``, ``image_size``…: the command line's, for any detector)."""
    factory = DETECTORS.get(name)
    try:
        accepted = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # a builtin or C callable: give it nothing it may refuse
        accepted = {}
    return factory(**{k: v for k, v in options.items() if k in accepted})
