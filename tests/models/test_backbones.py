from pathlib import Path

import pytest
import torch

from inat_lightning.config import ConfigError
from inat_lightning.models.backbones import BACKBONES, load_matching, resnet
from inat_lightning.models.card import card_text
from inat_lightning.models.checkpoint import load_classifier, read_checkpoint
from inat_lightning.models.classifier import Classifier


def test_depth_and_head():
    net = resnet(18, num_classes=5)
    assert net.fc.out_features == 5
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="depth=77"):
        resnet(77)


def test_local_weights_load_except_a_resized_head(tmp_path: Path):
    src = resnet(18, num_classes=10)
    torch.save(src.state_dict(), tmp_path / "w.pth")
    net = resnet(18, num_classes=4, weights_path=tmp_path / "w.pth")
    assert torch.equal(net.conv1.weight, src.conv1.weight)
    assert net.fc.out_features == 4
    # a Lightning checkpoint with "net." prefixes works too, and reports what stayed fresh
    torch.save(
        {"state_dict": {f"net.{k}": v for k, v in src.state_dict().items()}}, tmp_path / "c.ckpt"
    )
    fresh = resnet(18, num_classes=4)
    assert load_matching(fresh, tmp_path / "c.ckpt") == ["fc.bias", "fc.weight"]
    assert torch.equal(fresh.layer4[1].conv2.weight, src.layer4[1].conv2.weight)


def test_bad_weights_are_refused(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="weights_path="):
        resnet(18, weights_path=tmp_path / "missing.pth")
    torch.save({"other": torch.zeros(3)}, tmp_path / "junk.pth")
    with pytest.raises(ValueError, match="no tensor matches"):
        resnet(18, weights_path=tmp_path / "junk.pth")


class TinyNet(torch.nn.Module):
    """A backbone of "one's own package": pooled pixels into its head ``fc``."""

    def __init__(self, num_classes: int, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.fc = torch.nn.Linear(3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.scale * x.mean((2, 3)))


class Headless(torch.nn.Module):
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)


BACKBONES.register("TestTinyNet", TinyNet)
BACKBONES.register("TestHeadless", Headless)


def test_a_registered_backbone_is_built_by_name_with_its_args_and_kept_in_the_checkpoint(
    tmp_path,
):
    model = Classifier(num_classes=3, backbone="TestTinyNet", backbone_args={"scale": 2.0})
    assert isinstance(model.net, TinyNet) and model.net.scale == 2.0
    path = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams)}, path)
    loaded = load_classifier(path)  # the name in the file picks the installed class
    assert isinstance(loaded.net, TinyNet) and loaded.net.scale == 2.0
    assert "TestTinyNet species classifier" in card_text(read_checkpoint(path), "tiny.ckpt")


def test_a_backbone_that_is_unknown_or_has_no_head_is_refused_naming_it(tmp_path):
    with pytest.raises(ValueError, match=r"model.backbone='NoSuchNet': unknown backbone; one of "):
        Classifier(num_classes=3, backbone="NoSuchNet")
    with pytest.raises(ValueError, match=r"backbone='TestHeadless': must end in fc"):
        Classifier(num_classes=3, backbone="TestHeadless")
    with pytest.raises(ValueError, match=r"backbone_args=.*the resnet backbone takes depth"):
        Classifier(num_classes=3, depth=18, backbone_args={"width": 8})
    # a shared checkpoint naming a backbone that is not installed here: one line, nothing built
    model = Classifier(num_classes=3, backbone="TestTinyNet")
    hparams = {**dict(model.hparams), "backbone": "os.system"}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, tmp_path / "x.ckpt")
    with pytest.raises(ConfigError, match=r"^ckpt_path=.*x\.ckpt.*unknown backbone"):
        load_classifier(tmp_path / "x.ckpt")


def test_a_checkpoint_from_before_backbones_and_versions_loads_as_a_resnet(tmp_path):
    model = Classifier(num_classes=3, depth=18)
    hparams = {k: v for k, v in model.hparams.items() if k not in ("backbone", "backbone_args")}
    path = tmp_path / "old.ckpt"  # as 0.1.0 wrote them: no backbone, no version
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams}, path)
    assert type(load_classifier(path).net).__name__ == "ResNet"
    card = card_text(read_checkpoint(path), "old.ckpt")
    assert "ResNet18 species classifier" in card and "Written by inat-lightning unknown" in card


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        (
            {"backbone": ["TestTinyNet"]},
            r"hyper_parameters\.backbone=\['TestTinyNet'\]: not a name",
        ),
        ({"backbone_args": {"scale": {"nested": 1}}}, r"backbone_args: not a mapping of names to"),
        ({"backbone_args": "scale=2"}, r"backbone_args: not a mapping of names to"),
    ],
)
def test_a_checkpoint_s_backbone_entry_is_a_name_and_plain_settings(tmp_path, entry, message):
    model = Classifier(num_classes=3, backbone="TestTinyNet")
    torch.save(
        {"state_dict": model.state_dict(), "hyper_parameters": {**model.hparams, **entry}},
        tmp_path / "x.ckpt",
    )
    with pytest.raises(ConfigError, match=message):
        load_classifier(tmp_path / "x.ckpt")


def test_weights_load_into_the_resnet_backbone_only(tmp_path):
    torch.save(resnet(18, 3).state_dict(), tmp_path / "w.pth")
    with pytest.raises(ValueError, match=r"weights_path=.*loads into the resnet backbone only"):
        Classifier(num_classes=3, backbone="TestTinyNet", weights_path=str(tmp_path / "w.pth"))
