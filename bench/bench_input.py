"""Input pipeline: decode + augment images/s with the default loader workers vs the rate at which
ResNet101 consumes images in training, measured in the same run (goal: >= 1.5x, so the model never
waits). Compares Pillow with torchvision.io.decode_jpeg, on the embedded 96 px photos and on
500 px photos (iNaturalist's "medium" size, i.e. without a pre-resized cache).

    python -m bench.bench_input [--size 64] [--images 256]
"""

import argparse
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from bench.common import report
from inat_lightning.data.dataset import ImageDataset, collate_skipping
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.data.transforms import train_transform
from inat_lightning.models.backbones import resnet


class PillowDecode(Dataset):
    """The same samples decoded by Pillow (the baseline; ImageDataset uses torchvision)."""

    def __init__(self, root: Path, paths: list[str], transform) -> None:
        self.root, self.paths, self.transform = root, paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        with Image.open(self.root / self.paths[i]) as img:
            return {"image": self.transform(img.convert("RGB")), "label": 0, "index": i}


def loader_rate(ds: Dataset, workers: int, batch: int) -> float:
    dl = DataLoader(ds, batch_size=batch, num_workers=workers, collate_fn=collate_skipping)
    t0 = time.perf_counter()
    n = sum(len(b["label"]) for b in dl)
    return n / (time.perf_counter() - t0)


def model_rate(size: int, batch: int, steps: int = 3) -> float:
    net = resnet(101, 8).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(batch, 3, size, size), torch.randint(0, 8, (batch,))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return batch / min(times[1:])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2, help="the data config's default")
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    gen = SyntheticSpecies(observations_per_species=a.images // 16, seed=2)
    records = gen.generate(tmp / "small", progress=False)[: a.images]
    paths = [r.path for r in records]
    for p in paths:  # the same photos at iNaturalist's "medium" size
        (tmp / "medium" / p).parent.mkdir(parents=True, exist_ok=True)
        Image.open(tmp / "small" / p).resize((500, 500)).save(tmp / "medium" / p, quality=90)
    tf = train_transform(a.size)
    consume = model_rate(a.size, a.batch)
    rows = {}
    for source in ("small", "medium"):
        for name, ds in (
            ("pillow", PillowDecode(tmp / source, paths, tf)),
            ("decode_jpeg", ImageDataset(tmp / source, paths, [0] * len(paths), tf)),
        ):
            for workers in (0, a.workers):
                r = loader_rate(ds, workers, a.batch)
                rows[f"{source}_{name}_workers{workers}_img_s"] = round(r, 1)
    best = max(v for k, v in rows.items() if k.endswith(f"workers{a.workers}_img_s"))
    default = rows[f"small_decode_jpeg_workers{a.workers}_img_s"]  # what ImageDataset does
    report(
        "input",
        {
            "image_size": a.size,
            "images": len(paths),
            **rows,
            "resnet101_train_img_s": round(consume, 1),
            "default_pipeline_vs_model": round(default / consume, 2),
            "best_pipeline_vs_model": round(best / consume, 2),
            "goal": ">= 1.5x",
        },
    )


if __name__ == "__main__":
    main()
