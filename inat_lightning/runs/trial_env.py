"""How a job launched by the Optuna sweeper finds its trial: three environment variables, set
per job through ``hydra.job.env_set`` (so any launcher, SLURM included, passes them on)."""

STORAGE = "INAT_OPTUNA_STORAGE"  # the study's storage URL
STUDY = "INAT_OPTUNA_STUDY"  # the study's name
TRIAL = "INAT_OPTUNA_TRIAL"  # the trial's id in that storage
