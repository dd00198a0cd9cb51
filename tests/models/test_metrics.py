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
from inat_lightning.models.confusion import Confusion, ConfusionPairs


@pytest.mark.parametrize("num_classes", [3, 7])
def test_metrics_match_sklearn(num_classes):
    g = torch.Generator().manual_seed(num_classes)
    n = 300
    y = torch.randint(0, num_classes, (n,), generator=g)
    logits = torch.randn(n, num_classes, generator=g)
    logits[torch.arange(n), y] += 1.0  # better than chance, far from perfect
    pred = logits.argmax(1)

    metrics = build_metrics(num_classes)
    pairs = ConfusionPairs(num_classes)
    for chunk in torch.split(torch.arange(n), 64):  # accumulate over batches, like an epoch
        metrics.update(logits[chunk], y[chunk])
        pairs.update(logits[chunk], y[chunk])
    got = {k: float(v) for k, v in metrics.compute().items()}

    yn, pn = y.numpy(), pred.numpy()
    expected = {
        "acc": accuracy_score(yn, pn),
        "acc_macro": balanced_accuracy_score(yn, pn),
        "f1_macro": f1_score(yn, pn, average="macro"),
        "precision_macro": precision_score(yn, pn, average="macro", zero_division=0),
        "recall_macro": recall_score(yn, pn, average="macro"),
    }
    for k in (3, 5):
        if num_classes >= k:
            expected[f"top{k}"] = top_k_accuracy_score(
                yn, logits.numpy(), k=k, labels=range(num_classes)
            )
    assert set(got) == set(expected)
    for k, v in expected.items():
        assert got[k] == pytest.approx(v, abs=1e-5), k
    confusion = pairs.compute()
    _, _, f1 = confusion.precision_recall_f1()
    np.testing.assert_allclose(f1, f1_score(yn, pn, average=None), atol=1e-12)
    np.testing.assert_array_equal(confusion.dense(), confusion_matrix(yn, pn))


def test_sparse_counts_give_every_metric_of_a_dense_matrix_for_50_classes():
    """K = 50, random predictions with a few empty classes: the sparse counts agree with
    torchmetrics' dense confusion matrix and scikit-learn on every per-class and total metric,
    and the most-confused pairs are the dense matrix's largest off-diagonal cells."""
    from torchmetrics.classification import MulticlassConfusionMatrix

    k, n = 50, 4000
    g = torch.Generator().manual_seed(7)
    y = torch.randint(0, k - 3, (n,), generator=g)  # three classes never true
    logits = torch.randn(n, k, generator=g)
    logits[torch.arange(n), y] += 1.5
    pairs, dense = ConfusionPairs(k), MulticlassConfusionMatrix(k)
    for chunk in torch.split(torch.arange(n), 128):
        pairs.update(logits[chunk], y[chunk])
        dense.update(logits[chunk], y[chunk])
    confusion, cm = pairs.compute(), dense.compute().numpy()
    np.testing.assert_array_equal(confusion.dense(), cm)
    yn, pn = y.numpy(), logits.argmax(1).numpy()
    labels = list(range(k))
    precision, recall, f1 = confusion.precision_recall_f1()
    for ours, theirs in (
        (precision, precision_score(yn, pn, average=None, labels=labels, zero_division=0)),
        (recall, recall_score(yn, pn, average=None, labels=labels, zero_division=0)),
        (f1, f1_score(yn, pn, average=None, labels=labels, zero_division=0)),
    ):
        np.testing.assert_allclose(ours, theirs, atol=1e-12)
    assert confusion.accuracy() == pytest.approx(accuracy_score(yn, pn))
    np.testing.assert_array_equal(confusion.support, cm.sum(1))
    np.testing.assert_array_equal(confusion.predicted, cm.sum(0))
    off = cm - np.diag(np.diag(cm))
    top = confusion.mistakes()[:5]
    assert [c for c, _, _ in top] == sorted(off.ravel(), reverse=True)[:5]
    assert all(cm[i, j] == c for c, i, j in top)
    block = [3, 17, 42]
    np.testing.assert_array_equal(confusion.dense(block), cm[np.ix_(block, block)])
    again = Confusion.from_record(confusion.record())
    np.testing.assert_array_equal(again.dense(), cm)
