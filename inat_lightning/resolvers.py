"""OmegaConf resolvers used by ``conf/`` (registered when :mod:`inat_lightning` is imported)."""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf


def short_name(text: str, max_len: int = 120) -> str:
    """``text`` as one path component: ``/`` becomes ``_``; longer than ``max_len``, it is cut
    and ends with a hash of the whole, so names stay unique and under file-name limits (255)."""
    name = str(text).replace("/", "_")
    if len(name) <= max_len:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{name[: max_len - 9]}~{digest}"


def register() -> None:
    OmegaConf.register_new_resolver("short_name", short_name, replace=True)
