"""iNaturalist-scale class counts cost memory and time linear in photos and classes: the
classifier's metric state holds nothing per class pair, and the confusion counts sync across
DDP ranks as (true, predicted) pairs, equal to a single process's."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torchmetrics import Metric

from inat_lightning.models.classifier import Classifier
from inat_lightning.models.confusion import Confusion, ConfusionPairs

K = 10_000
N = 20_000  # validation photos


def state_bytes(module: torch.nn.Module) -> int:
    """Bytes held by every torchmetrics state under ``module`` (tensors and lists of them)."""
    total = 0
    for m in module.modules():
        if isinstance(m, Metric):
            for name in m._defaults:
                value = getattr(m, name)
                tensors = value if isinstance(value, list) else [value]
                total += sum(t.element_size() * t.nelement() for t in tensors)
    return total


def shard(rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The photos of one rank: labels and logits that predict the label or a near class."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, K, (N,), generator=g)
    pred = torch.where(
        torch.rand(N, generator=g) < 0.6, y, (y + torch.randint(1, 4, (N,), generator=g)) % K
    )
    part = slice(rank * N // world, (rank + 1) * N // world)
    return y[part], pred[part]


def as_logits(pred: torch.Tensor) -> torch.Tensor:
    """One-hot-ish logits whose argmax is ``pred`` (sparse, to keep the test light)."""
    logits = torch.zeros(len(pred), K)
    logits[torch.arange(len(pred)), pred] = 1.0
    return logits


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    pairs = ConfusionPairs(K)
    y, pred = shard(rank, world)
    for chunk in torch.split(torch.arange(len(y)), 1000):
        pairs.update(as_logits(pred[chunk]), y[chunk])
    held = state_bytes(pairs)
    confusion = pairs.compute()  # synced: every rank's pairs
    Path(out, f"{rank}.json").write_text(
        json.dumps({"record": confusion.record(), "state_bytes": held})
    )
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_10000_class_classifier_holds_no_class_pair_state():
    model = Classifier(num_classes=K, depth=18)
    held = state_bytes(model)
    dense = 2 * K * K * 8  # what two MulticlassConfusionMatrix (val, test) held: 1.6 GB
    assert held < 50e6, held
    assert held < dense / 100


def test_two_ddp_processes_sync_the_counts_of_a_single_process(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    y, pred = shard(0, 1)
    single = Confusion.from_pairs(y.numpy(), pred.numpy(), K)
    for found in results:
        assert found["state_bytes"] < 50e6  # two int64 per photo of the rank: ~160 KB
        synced = Confusion.from_record(found["record"])
        assert synced.total == N
        for name in ("true", "pred", "count"):
            np.testing.assert_array_equal(getattr(synced, name), getattr(single, name))


def test_the_report_lists_the_weakest_classes_and_says_the_csv_holds_all(tmp_path):
    from inat_lightning.analysis.data_bias import REPORT_CLASSES, report_markdown
    from inat_lightning.analysis.report import write_report
    from inat_lightning.analysis.tables import per_class_table, weakest_first

    k = 3 * REPORT_CLASSES
    y = np.arange(4 * k) % k
    confusion = Confusion.from_pairs(y, (y + (y % 3 == 0)) % k, k)
    table = weakest_first(per_class_table(confusion, [f"c{i}" for i in range(k)]))
    summary = {
        "checkpoint": "x.ckpt",
        "class_names": [f"c{i}" for i in range(k)],
        "chance_accuracy": 1 / k,
        "metrics": {"test/acc": confusion.accuracy()},
        "confused_pairs": [],
        "per_class": table,
        "taxonomy": None,
        "audit": {"title": "audit", "legend": "", "rows": []},
        "gradcam": [],
    }
    text = write_report(tmp_path, summary).read_text()
    assert f"The {REPORT_CLASSES} weakest of {k}; `per_class.csv` holds every class" in text
    listed = [line for line in text.splitlines() if re.match(r"\| c\d+ \|", line)]
    assert len(listed) == REPORT_CLASSES and all(" 0.000 |" in line for line in listed[:5])
    rows = [{"class": f"c{i}", "cue_share": i / k} for i in range(k)] + [
        {"class": "(all)", "cue_share": 0.5}
    ]
    section = "\n".join(report_markdown(rows))
    assert f"c{k - 1} " in section and "| c0 " not in section and "(all)" in section
