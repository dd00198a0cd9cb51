"""Cost of restarting loader workers every epoch (``data.persistent_workers=false``, the default
since exact resume needs it) vs keeping them (``true``), on the demo's data and loaders, as a
share of a demo training epoch (ResNet101, 64 px) measured in the same run.

    python -m bench.bench_workers [--epochs 4]
"""

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import report
from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.models.backbones import resnet


def epoch_seconds(root: Path, persistent: bool, epochs: int) -> list[float]:
    """Seconds per pass over the train and val loaders (no model), ``epochs`` passes."""
    dm = ImageFolderDataModule(root, image_size=64, num_workers=2, persistent_workers=persistent)
    dm.setup()
    train, val = dm.train_dataloader(), dm.val_dataloader()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for loader in (train, val):
            for _batch in loader:
                pass
        times.append(time.perf_counter() - t0)
    return times


def train_epoch_seconds(batches: int, batch_size: int = 32, steps: int = 3) -> float:
    """A demo training epoch: ResNet101 forward + backward + SGD step at 64 px, ``batches``."""
    net = resnet(101, 8)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x, y = torch.rand(batch_size, 3, 64, 64), torch.randint(0, 8, (batch_size,))
    times = []
    for _ in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synthetic"
        SyntheticSpecies().generate(root, progress=False)  # the demo's dataset
        keep = epoch_seconds(root, True, args.epochs)
        restart = epoch_seconds(root, False, args.epochs)
        dm = ImageFolderDataModule(root, image_size=64, num_workers=0)
        dm.setup()
        batches = len(dm.train_dataloader())
    # the first epoch starts workers in both modes; later ones show the restart cost
    overhead = statistics.median(restart[1:]) - statistics.median(keep[1:])
    demo_epoch = train_epoch_seconds(batches)
    report(
        "workers",
        {
            "loader_epoch_s_persistent": [round(t, 3) for t in keep],
            "loader_epoch_s_restarting": [round(t, 3) for t in restart],
            "restart_overhead_s_per_epoch": round(overhead, 3),
            "demo_train_epoch_s": round(demo_epoch, 1),
            "overhead_share_of_demo_epoch": round(overhead / demo_epoch, 4),
        },
    )


if __name__ == "__main__":
    main()
