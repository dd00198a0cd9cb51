"""Hydra imports every module under ``hydra_plugins`` before it composes a config: importing
this one registers the project's resolvers (``${inat.<name>:...}`` in ``conf/``), so they
resolve in the project's commands, in ``hydra.compose`` and in a user's own Hydra app alike,
without the package registering them whenever any of its modules is imported."""

from inat_lightning.runs.resolvers import register

register()
