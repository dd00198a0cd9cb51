"""Identify new photos: python predict.py ckpt_path=<run>/checkpoints/<best>.ckpt inputs=photos/.
Writes predictions.csv, observations.csv, predictions.json and explanations/. See README.md."""

from inat_lightning.cli import predict

if __name__ == "__main__":
    predict()
