"""Train a species classifier: python train.py [overrides]. See README.md and conf/train.yaml.
``resume=<run dir>`` continues a stopped run in place (see inat_lightning/runs/resume.py)."""

from inat_lightning.cli import train

if __name__ == "__main__":
    train()
