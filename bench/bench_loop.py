"""Training-loop overhead: images/s of our LightningModule + DataModule vs a minimal hand-written
PyTorch loop on the same model, data, loader and batch size (goal: >= 0.97x). Steady state: the
rate is taken between the ends of step ``--skip`` and of the last step, so the one-off costs of
starting ``Trainer.fit`` are not counted as per-step overhead.

    python -m bench.bench_loop [--depth 18] [--size 64] [--steps 30]
"""

import argparse
import functools
import tempfile
import time

import lightning.pytorch as L
import torch

from bench.common import report
from inat_lightning.data.datamodule import ImageFolderDataModule
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.models.classifier import Classifier


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=18)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--skip", type=int, default=5, help="first steps left out of the rate")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    dm = ImageFolderDataModule(
        f"{tmp}/syn",
        image_size=a.size,
        batch_size=a.batch,
        num_workers=0,
        synthetic=SyntheticSpecies(observations_per_species=60, seed=1),
    )
    dm.synthetic.ensure(dm.root, progress=False)
    dm.setup()
    optimizer = functools.partial(torch.optim.SGD, lr=0.01, momentum=0.9)

    def steady_rate(ends: list[float]) -> float:
        return (len(ends) - 1 - a.skip) * a.batch / (ends[-1] - ends[a.skip])

    class StepClock(L.Callback):
        def __init__(self) -> None:
            self.ends: list[float] = []

        def on_train_batch_end(self, *args) -> None:
            self.ends.append(time.perf_counter())

    def lightning_run() -> float:
        torch.manual_seed(0)
        model = Classifier(dm.num_classes, optimizer, depth=a.depth, class_names=dm.class_names)
        clock = StepClock()
        trainer = L.Trainer(
            max_steps=a.steps,
            limit_val_batches=0,
            logger=False,
            accelerator="cpu",
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            callbacks=[clock],
        )
        trainer.fit(model, datamodule=dm)
        return steady_rate(clock.ends)

    def hand_run() -> float:
        torch.manual_seed(0)
        net = Classifier(dm.num_classes, optimizer, depth=a.depth).net
        opt = optimizer(net.parameters())
        loss_fn = torch.nn.CrossEntropyLoss()
        net.train()
        ends: list[float] = []
        steps = 0
        while steps < a.steps:
            for batch in dm.train_dataloader():
                loss = loss_fn(net(batch["image"]), batch["label"])
                opt.zero_grad()
                loss.backward()
                opt.step()
                ends.append(time.perf_counter())
                steps += 1
                if steps == a.steps:
                    break
        return steady_rate(ends)

    hand_run()  # warm-up (allocator, first-batch decode)
    ours, base = [], []
    for _ in range(a.rounds):  # interleaved, so drift in machine speed hits both
        base.append(hand_run())
        ours.append(lightning_run())
    o, b = max(ours), max(base)
    report(
        "loop",
        {
            "model": f"resnet{a.depth}",
            "image_size": a.size,
            "batch": a.batch,
            "steps": a.steps,
            "lightning_img_s": round(o, 1),
            "hand_loop_img_s": round(b, 1),
            "ratio": round(o / b, 3),
            "goal": ">= 0.97x",
        },
    )


if __name__ == "__main__":
    main()
