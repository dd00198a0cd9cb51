"""The project's OmegaConf resolvers (``${inat.<name>:...}`` in ``conf/``), registered by the
commands (:mod:`inat_lightning.cli`: a Slurm job, which unpickles its task, too) and by the
``hydra_plugins`` package (whatever composes the config)."""

from __future__ import annotations

from omegaconf import OmegaConf

from inat_lightning.runs.names import run_name


def gpus_per_node(accelerator: str, devices: int | str) -> int | str:
    """A Slurm job's GPUs per node for a trainer: none when it runs on the CPU (a CPU partition
    refuses a GPU request), else one per device."""
    return 0 if str(accelerator).lower() == "cpu" else devices


def register() -> None:
    OmegaConf.register_new_resolver("inat.run_name", run_name, replace=True)
    OmegaConf.register_new_resolver("inat.gpus_per_node", gpus_per_node, replace=True)
