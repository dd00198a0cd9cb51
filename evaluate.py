"""Analyse a checkpoint: python evaluate.py ckpt_path=<run>/checkpoints/<best>.ckpt.
Writes report.md, tables, figures, Grad-CAM galleries and the bias audit. See README.md."""

from inat_lightning.cli import evaluate

if __name__ == "__main__":
    evaluate()
