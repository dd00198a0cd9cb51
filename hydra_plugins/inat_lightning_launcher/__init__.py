"""Hydra builds only plugins defined under ``hydra_plugins``: this names the project's Slurm
launcher (all of it in ``inat_lightning.runs.slurm``) as one. Without the ``slurm`` extra
(submitit) there is nothing to name."""

try:
    from inat_lightning.runs.slurm import WatchedSlurmLauncher as _WatchedSlurmLauncher
except ImportError:  # pip install -e '.[slurm]' adds it
    pass
else:

    class WatchedSlurmLauncher(_WatchedSlurmLauncher):
        """``hydra/launcher=slurm``: see :mod:`inat_lightning.runs.slurm`."""
