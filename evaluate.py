"""Analyse a checkpoint: python evaluate.py ckpt_path=<run>/checkpoints/<best>.ckpt.
Writes report.md, tables, figures, Grad-CAM galleries and the bias audit. See README.md."""

import hydra
from omegaconf import DictConfig

from inat_lightning.config import run_cli
from inat_lightning.evaluation import evaluate


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_cli(evaluate, cfg)


if __name__ == "__main__":
    main()
