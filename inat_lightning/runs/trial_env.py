"""How a job launched by the Optuna sweeper finds its trial: four environment variables, set
per job through ``hydra.job.env_set`` (so any launcher, SLURM included, passes them on)."""

STORAGE = "INAT_OPTUNA_STORAGE"  # the study's storage URL
STUDY = "INAT_OPTUNA_STUDY"  # the study's name
TRIAL = "INAT_OPTUNA_TRIAL"  # the trial's id in that storage
HEARTBEAT = (
    "INAT_OPTUNA_HEARTBEAT_S"  # how often the job records that its trial is alive (0: never)
)
