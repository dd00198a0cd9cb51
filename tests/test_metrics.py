"""The classifier's torchmetrics against scikit-learn on fixed predictions."""

import numpy as np
import pytest
import torch
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    top_k_accuracy_score,
)

from inat_lightning.models.classifier import build_metrics


@pytest.mark.parametrize("num_classes", [3, 7])
def test_metrics_match_sklearn(num_classes):
    from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassF1Score

    g = torch.Generator().manual_seed(num_classes)
    n = 300
    y = torch.randint(0, num_classes, (n,), generator=g)
    logits = torch.randn(n, num_classes, generator=g)
    logits[torch.arange(n), y] += 1.0  # better than chance, far from perfect
    pred = logits.argmax(1)

    metrics = build_metrics(num_classes)
    per_class = MulticlassF1Score(num_classes, average=None)
    cm = MulticlassConfusionMatrix(num_classes)
    for chunk in torch.split(torch.arange(n), 64):  # accumulate over batches, like an epoch
        metrics.update(logits[chunk], y[chunk])
        per_class.update(logits[chunk], y[chunk])
        cm.update(logits[chunk], y[chunk])
    got = {k: float(v) for k, v in metrics.compute().items()}

    yn, pn = y.numpy(), pred.numpy()
    expected = {
        "acc": accuracy_score(yn, pn),
        "acc_macro": balanced_accuracy_score(yn, pn),
        "f1_macro": f1_score(yn, pn, average="macro"),
        "precision_macro": precision_score(yn, pn, average="macro", zero_division=0),
        "recall_macro": recall_score(yn, pn, average="macro"),
    }
    if num_classes >= 5:
        expected["top5"] = top_k_accuracy_score(yn, logits.numpy(), k=5, labels=range(num_classes))
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-5), k
    np.testing.assert_allclose(
        per_class.compute().numpy(), f1_score(yn, pn, average=None), atol=1e-5
    )
    np.testing.assert_array_equal(cm.compute().numpy(), confusion_matrix(yn, pn))
