"""predict.py's throughput (photos/s, decoding included) against a bare batched forward pass of
the same network over the same files with the same loader settings, in the same run (goal:
≥ 0.9×), and with Grad-CAM explanations on.

``predict(cfg)`` runs in-process (the ~7 s of importing the stack is left out of both): loading
the checkpoint, collecting the inputs, predicting, fusing observations and writing the CSV and
JSON files all count against it.

    python -m bench.bench_predict [--depth 50] [--size 128] [--images 256] [--repeats 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bench.common import report
from inat_lightning.data.dataset import ImageDataset, collate_skipping
from inat_lightning.data.manifest import read_manifest
from inat_lightning.data.synthetic import SyntheticSpecies
from inat_lightning.data.transforms import eval_transform
from inat_lightning.models.classifier import Classifier
from inat_lightning.prediction import predict
from tests.helpers.cli import compose_config

WORKERS, BATCH = 2, 32


def bare(model: Classifier, root: Path, paths: list[str], size: int) -> float:
    """Photos/s of decode + eval transform + batched forward, nothing else."""
    ds = ImageDataset(root, paths, [0] * len(paths), eval_transform(size))
    loader = DataLoader(ds, BATCH, num_workers=WORKERS, collate_fn=collate_skipping)
    net = model.net.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            net(batch["image"])
    return len(paths) / (time.perf_counter() - t0)


def ours(tmp: Path, ckpt: Path, root: Path, n: int, explain: bool) -> float:
    cfg = compose_config(
        "predict",
        tmp,
        f"ckpt_path={ckpt}",
        f"inputs={root}",
        f"batch_size={BATCH}",
        f"num_workers={WORKERS}",
        f"explain={str(explain).lower()}",
        f"explain_max={n}",
        "progress=false",
        out=tmp / f"out-{time.monotonic_ns()}",
    )
    t0 = time.perf_counter()
    predict(cfg)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--depth", type=int, default=50)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        gen = SyntheticSpecies(  # photos larger than the input: decoding and resizing count
            num_species=8, observations_per_species=a.images // 16, image_size=2 * a.size, seed=1
        )
        root = tmp / "photos"
        gen.generate(root, progress=False)
        paths = [r.path for r in read_manifest(root / "manifest.csv")]
        model = Classifier(
            8,
            class_names=[s.name for s in gen.species()],
            depth=a.depth,
            input_spec={"image_size": a.size},  # the eval transform at the bare loop's defaults
        )
        ckpt = tmp / "model.ckpt"
        torch.save(
            {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt
        )
        n = len(paths)
        results = {"bare": [], "predict": [], "predict_explain": []}
        for _ in range(a.repeats):  # interleaved, so drift hits all three alike
            results["bare"].append(bare(model, root, paths, a.size))
            results["predict"].append(ours(tmp, ckpt, root, n, explain=False))
            results["predict_explain"].append(ours(tmp, ckpt, root, n, explain=True))
    best = {k: max(v) for k, v in results.items()}
    report(
        "predict",
        {
            "network": f"resnet{a.depth}",
            "input_px": a.size,
            "photos": n,
            "photo_px": 2 * a.size,
            "bare_photos_per_s": round(best["bare"], 1),
            "predict_photos_per_s": round(best["predict"], 1),
            "ratio": round(best["predict"] / best["bare"], 3),
            "predict_with_explanations_photos_per_s": round(best["predict_explain"], 1),
            "explanations_ratio": round(best["predict_explain"] / best["bare"], 3),
        },
    )


if __name__ == "__main__":
    main()
