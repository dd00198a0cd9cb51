"""Compute efficiency of the ResNet training step: achieved FLOP/s (counted with
torch.utils.flop_counter) as a fraction of this machine's dense float32 matmul peak, measured in
the same run, for resnet18/50/101 at 64/128/224 px, default vs channels_last vs bf16 autocast
(goal: >= 60% of the matmul peak for ResNet101).

    python -m bench.bench_flops [--depths 18 50 101] [--sizes 64 128 224] [--bf16-sizes 64]
"""

import argparse
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.common import report
from inat_lightning.models.backbones import resnet

BATCH = {64: 16, 128: 8, 224: 4}


def matmul_peak(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / min(times)


def step_flops(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as fc:
        torch.nn.functional.cross_entropy(net(x), y).backward()
    net.zero_grad(set_to_none=True)
    return fc.get_total_flops()


def step_time(net, opt, x, y, variant: str, steps: int) -> float:
    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant == "bf16"):
            loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()  # warm-up
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--depths", type=int, nargs="+", default=[18, 50, 101])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128, 224])
    ap.add_argument(
        "--bf16-sizes", type=int, nargs="*", default=[64], help="bf16 is slow on CPUs without it"
    )
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    torch.manual_seed(0)
    peak = matmul_peak()
    rows = []
    for depth in a.depths:
        for size in a.sizes:
            batch = BATCH.get(size, 8)
            x, y = torch.randn(batch, 3, size, size), torch.randint(0, 8, (batch,))
            flops = step_flops(resnet(depth, 8), x, y)
            for variant in ("default", "channels_last", "bf16"):
                if variant == "bf16" and size not in a.bf16_sizes:
                    continue
                net = resnet(depth, 8).train()
                xv = x
                if variant == "channels_last":
                    net = net.to(memory_format=torch.channels_last)
                    xv = x.contiguous(memory_format=torch.channels_last)
                opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
                t = step_time(net, opt, xv, y, variant, 1 if variant == "bf16" else a.steps)
                rows.append(
                    {
                        "model": f"resnet{depth}",
                        "size": size,
                        "variant": variant,
                        "batch": batch,
                        "img_s": round(batch / t, 1),
                        "gflop_per_img": round(flops / batch / 1e9, 2),
                        "achieved_gflop_s": round(flops / t / 1e9, 1),
                        "share_of_peak": round(flops / t / peak, 3),
                    }
                )
                print(rows[-1], flush=True)
    report(
        "flops",
        {
            "matmul_peak_gflop_s": round(peak / 1e9, 1),
            "rows": rows,
            "goal": ">= 0.60 of the matmul peak for ResNet101",
        },
    )


if __name__ == "__main__":
    main()
