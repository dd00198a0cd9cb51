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
import pytest
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


# ---------------------------------------------------------------------- predict.py at scale
def test_streamed_answers_equal_the_dense_computation():
    """Photos streamed a batch at a time in observation order (two unreadable) give each photo's
    top 3 and each observation's fused top 3 as computed on the whole (N, K) array at once."""
    from inat_lightning.analysis.infer import Batch
    from inat_lightning.prediction import answer, observation_order

    rng = np.random.default_rng(0)
    n, k = 30, 12
    names = [f"s{i}" for i in range(k)]
    groups = [f"o{g}" for g in rng.integers(0, 8, n)]
    logits = rng.normal(0, 3, (n, k)).astype(np.float32)
    unreadable = {4, 17}
    order = [i for i in observation_order(groups) if i not in unreadable]
    stream = [
        Batch(np.array(order[s : s + 4]), logits[order[s : s + 4]], np.zeros(4, int))
        for s in range(0, len(order), 4)
    ]
    answers = answer(stream, groups, names, temperature=2.0, k=3)

    z = logits.astype(np.float64) / 2.0
    probs = np.exp(z - z.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    for i in range(n):
        if i in unreadable:
            assert answers.photos[i] is None
            continue
        best = np.argsort(-probs[i])[:3]
        assert [c for c, _ in answers.photos[i]] == [names[j] for j in best]
        assert [p for _, p in answers.photos[i]] == pytest.approx(probs[i][best], rel=1e-5)
    for g in set(groups):
        members = [i for i in range(n) if groups[i] == g and i not in unreadable]
        mean_log = np.log(probs[members]).mean(0)
        fused = np.exp(mean_log) / np.exp(mean_log).sum()
        best = np.argsort(-fused)[:3]
        assert [c for c, _ in answers.observations[g]] == [names[j] for j in best]
        assert [p for _, p in answers.observations[g]] == pytest.approx(fused[best], rel=1e-5)


def test_predict_holds_no_photos_by_classes_array(tmp_path):
    """20,000 classes, 512 photos: the (photos × classes) float32 array predict.py once kept is
    41 MB; the Python heap (numpy arrays included, tracemalloc) peaks far below it while
    predicting, and every photo still gets its answer."""
    import tracemalloc

    from inat_lightning.data.spec import InputSpec
    from inat_lightning.prediction import predict
    from tests.helpers.cli import compose_config
    from tests.helpers.data import make_image_folder

    classes, photos = 20_000, 512
    model = Classifier(
        num_classes=classes,
        depth=18,
        class_names=[f"species {i}" for i in range(classes)],
        input_spec=InputSpec(image_size=32).to_dict(),
    )
    ckpt = tmp_path / "wide.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, ckpt)
    folder = make_image_folder(tmp_path / "photos", {f"obs{i}": 8 for i in range(photos // 8)})
    cfg = compose_config(
        "predict",
        tmp_path,
        f"ckpt_path={ckpt}",
        f"inputs={folder}",
        "explain=false",
        "batch_size=32",
        "progress=false",
    )
    tracemalloc.start()
    try:
        summary = predict(cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["photos_read"] == photos and summary["observations"] == photos // 8
    assert peak < photos * classes * 4 / 4, peak
