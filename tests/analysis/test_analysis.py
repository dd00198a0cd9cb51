"""Analysis building blocks: tables against scikit-learn, figures without a display, Grad-CAM
overlays and their side effects, example selection, the energy pointing game."""

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from inat_lightning.analysis import figures
from inat_lightning.analysis.gradcam import CamSetting, blend, compute_cams, energy_in_box, heatmap
from inat_lightning.analysis.selection import select_examples
from inat_lightning.analysis.tables import most_confused_pairs, per_class_table, to_markdown
from inat_lightning.models.backbones import resnet
from inat_lightning.models.confusion import Confusion


def fixed_predictions(n_classes: int = 6, n: int = 400, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    p = np.where(rng.random(n) < 0.6, y, rng.integers(0, n_classes, n))
    p[(y == 0) & (rng.random(n) < 0.5)] = 1  # a look-alike pair: 0 is often taken for 1
    return y, p


def test_per_class_table_matches_sklearn():
    y, p = fixed_predictions()
    prec, rec, f1, support = precision_recall_fscore_support(y, p, zero_division=0)
    rows = per_class_table(Confusion.from_pairs(y, p, 6), [f"c{i}" for i in range(6)])
    np.testing.assert_allclose([r["precision"] for r in rows], prec)
    np.testing.assert_allclose([r["recall"] for r in rows], rec)
    np.testing.assert_allclose([r["f1"] for r in rows], f1)
    assert [r["support"] for r in rows] == support.tolist()


def test_most_confused_pairs_find_the_look_alikes():
    y, p = fixed_predictions()
    cm = confusion_matrix(y, p)
    pairs = most_confused_pairs(Confusion.from_pairs(y, p, 6), [f"c{i}" for i in range(6)], top=5)
    top = pairs[0]
    assert (top["true"], top["predicted"]) == ("c0", "c1")
    assert top["count"] == cm[0, 1] and top["rate"] == pytest.approx(cm[0, 1] / cm[0].sum())
    assert top["reverse_count"] == cm[1, 0]
    assert [r["count"] for r in pairs] == sorted((r["count"] for r in pairs), reverse=True)
    assert "| true | predicted |" in to_markdown(pairs)


@pytest.mark.parametrize("n_classes", [8, 100])
def test_figures_render_without_a_display(tmp_path: Path, n_classes):
    y, p = fixed_predictions(n_classes, n=20 * n_classes)
    confusion = Confusion.from_pairs(y, p, n_classes)
    names = [f"Species {i}" for i in range(n_classes)]
    fig = figures.confusion_matrix_figure(confusion, names, max_classes=30)
    # the block drawn is the dense matrix's, row-normalised over all of a class's photos
    cm = confusion_matrix(y, p, labels=range(n_classes)).astype(float)
    drawn = fig.axes[0].images[0].get_array()
    keep = [int(t.get_text().split()[-1]) for t in fig.axes[0].get_yticklabels()]
    want = (cm / cm.sum(1, keepdims=True))[np.ix_(keep, keep)]
    np.testing.assert_allclose(drawn, want)
    shown = len(fig.axes[0].get_xticklabels())
    assert shown == min(n_classes, 30)
    if n_classes > 30:
        assert "most-confused" in fig.axes[0].get_title()
        assert "Species 0" in [
            t.get_text() for t in fig.axes[0].get_xticklabels()
        ]  # the look-alike block
    figures.save(fig, tmp_path / "cm.png")
    figures.save(figures.per_class_bars(per_class_table(confusion, names)), tmp_path / "bars.png")
    assert (tmp_path / "cm.png").stat().st_size > 5000 and (
        tmp_path / "bars.png"
    ).stat().st_size > 5000


def test_red_style_has_no_green_or_blue_and_blends():
    cams = np.random.default_rng(0).random((2, 8, 8)).astype(np.float32)
    red = heatmap(cams, "red")
    assert np.array_equal(red[..., 0], cams) and not red[..., 1].any() and not red[..., 2].any()
    jet = heatmap(cams, "colormap")
    assert jet.shape == (2, 8, 8, 3) and jet.min() >= 0 and jet.max() <= 1 and jet[..., 1].any()
    photos = np.full((2, 8, 8, 3), 0.5, np.float32)
    out = blend(photos, cams, "red", alpha=0.4)
    np.testing.assert_allclose(out[..., 0], 0.6 * 0.5 + 0.4 * cams, rtol=1e-6)
    np.testing.assert_allclose(out[..., 1], np.full((2, 8, 8), 0.3), rtol=1e-6)
    with pytest.raises(ValueError, match="style"):
        heatmap(cams, "sepia")


def test_energy_pointing_game():
    cam = np.zeros((10, 10), np.float32)
    cam[0:5, 0:5] = 1.0
    share, area = energy_in_box(cam, (0, 0, 5, 5))
    assert share == 1.0 and area == 0.25
    share, area = energy_in_box(np.ones((10, 10), np.float32), (0, 0, 5, 10))
    assert share == pytest.approx(0.5) and area == 0.5


def test_select_examples():
    labels = np.array([0, 0, 0, 1, 1, 2])
    preds = np.array([0, 1, 0, 1, 0, 0])
    conf = np.array([0.6, 0.9, 0.8, 0.7, 0.95, 0.5])
    picks = select_examples(labels, preds, conf, 3, per_class=1, top_mistakes=2)
    assert [(p.position, p.kind) for p in picks] == [
        (2, "correct"),
        (1, "wrong"),
        (3, "correct"),
        (4, "wrong"),
        (5, "wrong"),
    ]
    picks = select_examples(labels, preds, conf, 3, per_class=0, top_mistakes=2)
    assert [(p.position, p.kind) for p in picks] == [(4, "top_mistake"), (1, "top_mistake")]
    # above max_classes, only the most-mistaken classes get examples (0 and 1: one mistake each,
    # 2: one too, ties go to the lower index)
    picks = select_examples(labels, preds, conf, 3, per_class=1, top_mistakes=0, max_classes=2)
    assert [(p.position, p.kind) for p in picks] == [
        (2, "correct"),
        (1, "wrong"),
        (3, "correct"),
        (4, "wrong"),
    ]


def test_select_examples_at_10000_classes_is_bounded_and_matches_a_plain_loop():
    rng = np.random.default_rng(0)
    k, n = 10_000, 50_000
    labels = rng.integers(0, k, n)
    preds = np.where(rng.random(n) < 0.7, labels, rng.integers(0, k, n))
    conf = rng.random(n)
    picks = select_examples(labels, preds, conf, k, per_class=1, top_mistakes=8, max_classes=30)
    assert len(picks) <= 2 * 30 + 8
    wrong = np.bincount(labels[labels != preds], minlength=k)
    chosen = sorted({int(labels[p.position]) for p in picks if p.kind != "top_mistake"})
    assert min(wrong[chosen]) >= np.sort(wrong)[-30]  # the most-mistaken classes
    for c in chosen[:5]:  # each chosen class's picks are its most confident right and wrong
        mine = [i for i in range(n) if labels[i] == c]
        expected = {}
        for kind, ok in (("correct", True), ("wrong", False)):
            found = [i for i in mine if (preds[i] == c) == ok]
            if found:
                expected[kind] = max(found, key=lambda i: (conf[i], -i))
        got = {
            p.kind: p.position for p in picks if p.kind != "top_mistake" and labels[p.position] == c
        }
        assert got == expected


def test_batched_cams_match_single_and_leave_the_model_untouched():
    torch.manual_seed(0)
    net = resnet(18, num_classes=3)
    x = torch.randn(5, 3, 64, 64)
    net.train()
    net.fc.weight.grad = torch.ones_like(net.fc.weight)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batched = compute_cams(net, x, [0, 1, 2, 0, 1], CamSetting(target_layer="layer3"), batch_size=5)
    single = np.concatenate(
        [
            compute_cams(net, x[i : i + 1], [t], CamSetting(target_layer="layer3"))
            for i, t in enumerate([0, 1, 2, 0, 1])
        ]
    )
    assert batched.shape == (5, 64, 64) and batched.min() >= 0 and batched.max() <= 1
    np.testing.assert_allclose(batched, single, atol=1e-4)
    assert net.training and all(m.training for m in net.modules())
    assert all(p.requires_grad for p in net.parameters())
    assert (
        torch.equal(net.fc.weight.grad, torch.ones_like(net.fc.weight))
        and net.conv1.weight.grad is None
    )
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # BN running stats included
    with pytest.raises(ValueError, match="^method='NoSuchCAM': unknown CAM method"):
        compute_cams(net, x, [0] * 5, CamSetting(method="NoSuchCAM"))
    with pytest.raises(ValueError, match="^score='nosuch': unknown CAM target"):
        compute_cams(net, x, [0] * 5, CamSetting(score="nosuch"))


class FishAndHand(torch.nn.Module):
    """A hand-wired classifier: feature 0 sees the fish, feature 1 the hand; the logits are
    striatus = fish + hand, its cryptic twin punctatus = fish, a bird = -10 fish."""

    def __init__(self) -> None:
        super().__init__()
        conv = torch.nn.Conv2d(3, 2, 1, bias=False)
        conv.weight.data = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]])[:, :, None, None]
        self.layer1 = torch.nn.Sequential(conv, torch.nn.ReLU())
        self.fc = torch.nn.Linear(2, 3, bias=False)
        self.fc.weight.data = torch.tensor([[1.0, 1.0], [1.0, 0.0], [-10.0, 0.0]])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer1(x).mean((2, 3)))


def test_finer_cams_show_what_tells_a_species_from_its_twin_not_what_makes_it_a_fish():
    x = torch.zeros(1, 3, 16, 16)
    x[0, 0, :, :8] = 1.0  # the fish: the left half
    x[0, 1, 12:, 12:] = 1.0  # the hand: a corner
    hand = (12, 12, 16, 16)
    net = FishAndHand()
    assert net(x).argmax().item() == 0  # striatus, by the hand alone
    by_class = compute_cams(net, x, [0], CamSetting(target_layer="layer1"))[0]
    finer = compute_cams(net, x, [0], CamSetting(target_layer="layer1", score="finer"))[0]
    share_class, area = energy_in_box(by_class, hand)
    share_finer, _ = energy_in_box(finer, hand)
    assert area == pytest.approx(1 / 16)
    assert share_class < 0.15  # the class score is mostly the fish, which both twins share
    assert share_finer > 0.9  # against the twin, only the hand counts
