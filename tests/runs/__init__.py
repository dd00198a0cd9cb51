"""Tests of runs and sweeps: resume, locks, logs, DDP, Optuna, Slurm."""
