"""Hydra builds only plugins defined under ``hydra_plugins``: this names the project's Optuna
sweeper (all of it in ``inat_lightning.runs.optuna_sweeper``) as one."""

from inat_lightning.runs.optuna_sweeper import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """``hydra/sweeper=inat_optuna``: see :mod:`inat_lightning.runs.optuna_sweeper`."""
