"""Grad-CAM overlays/s, batched vs one image at a time (goal: >= 5x).

python bench/bench_gradcam.py [--depth 101] [--size 64] [--n 64]
"""

import argparse

import torch

from bench.common import rate, report
from inat_lightning.analysis.gradcam import blend, compute_cams
from inat_lightning.models.backbones import resnet


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=101)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--batch", type=int, default=32)
    a = ap.parse_args()
    torch.manual_seed(0)
    net = resnet(a.depth, num_classes=8).eval()
    x = torch.randn(a.n, 3, a.size, a.size)
    targets = [i % 8 for i in range(a.n)]
    photos = torch.rand(a.n, a.size, a.size, 3).numpy()

    def batched() -> int:
        blend(photos, compute_cams(net, x, targets, batch_size=a.batch))
        return a.n

    def single() -> int:
        for i in range(a.n):
            blend(
                photos[i : i + 1], compute_cams(net, x[i : i + 1], targets[i : i + 1], batch_size=1)
            )
        return a.n

    batched()  # warm-up
    b, s = rate(batched), rate(single)
    report(
        "gradcam",
        {
            "model": f"resnet{a.depth}",
            "image_size": a.size,
            "images": a.n,
            "batch": a.batch,
            "batched_per_s": round(b, 1),
            "single_per_s": round(s, 1),
            "ratio": round(b / s, 2),
            "goal": ">= 5x",
        },
    )


if __name__ == "__main__":
    main()
