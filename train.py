"""Train a species classifier: python train.py [overrides]. See README.md and conf/train.yaml."""

import sys

import hydra
from omegaconf import DictConfig

from inat_lightning.config import run_cli
from inat_lightning.runs.resume import resume_argv
from inat_lightning.training import train


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    return run_cli(train, cfg)


if __name__ == "__main__":
    sys.argv = resume_argv(sys.argv)  # resume=<run dir>: that run's overrides, in that folder
    main()
