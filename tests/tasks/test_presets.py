"""Experiment presets compose and validate; fine-tuning loads local weights and freezes the
backbone for the first epochs."""

import pytest
import torch
from torchvision.models import resnet18

from inat_lightning.checks import check_train_config
from inat_lightning.config import ConfigError
from inat_lightning.training import train
from tests.helpers.cli import SMALL, compose_config


@pytest.mark.parametrize("preset", ["cpu_quick", "resnet101_gpu", "finetune"])
def test_every_preset_composes_and_validates(tmp_path, preset):
    weights = tmp_path / "w.pth"
    weights.touch()
    cfg = compose_config("train", tmp_path, f"experiment={preset}", f"model.weights_path={weights}")
    check_train_config(cfg)
    assert preset in cfg.tags


def test_finetune_needs_weights_and_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"^model\.weights_path: required"):
        check_train_config(compose_config("train", tmp_path, "experiment=finetune"))


@pytest.mark.slow
def test_finetune_from_local_weights_with_a_frozen_backbone_first(tmp_path, shared_data_dir):
    torch.manual_seed(0)
    source = resnet18(num_classes=1000).state_dict()  # an "ImageNet" checkpoint: 1000 classes
    weights = tmp_path / "resnet18.pth"
    torch.save(source, weights)
    cfg = compose_config(
        "train",
        tmp_path,
        "experiment=finetune",
        *SMALL,
        f"paths.data_dir={shared_data_dir}",
        f"model.weights_path={weights}",
        "callbacks.backbone_finetuning.unfreeze_backbone_at_epoch=1",
        "callbacks.model_checkpoint.save_top_k=-1",  # keep every epoch's weights
        "~callbacks.gradcam",
        "~callbacks.progress_bar",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=2",
        "test=false",
    )
    train(cfg)
    ckpts = sorted((tmp_path / "out" / "checkpoints").glob("epoch*.ckpt"))
    assert [p.name[:8] for p in ckpts] == ["epoch000", "epoch001"]
    epochs = [torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in ckpts]
    conv = "layer2.0.conv1.weight"
    # epoch 0: the loaded backbone is frozen, the new 4-class head learns
    assert torch.equal(epochs[0][f"net.{conv}"], source[conv])
    assert epochs[0]["net.fc.weight"].shape == (4, 512)
    # epoch 1: the backbone has joined training
    assert not torch.equal(epochs[1][f"net.{conv}"], source[conv])
    assert not torch.equal(epochs[1]["net.fc.weight"], epochs[0]["net.fc.weight"])
