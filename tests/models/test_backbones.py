from pathlib import Path

import pytest
import torch

from inat_lightning.models.backbones import load_matching, resnet


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
