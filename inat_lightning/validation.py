"""The one validation style of constructors (data module, synthetic generator, scrape backends):
each argument's rule and what the value must be, checked in one call."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def require(rules: Mapping[str, tuple[bool, str]], values: Mapping[str, Any]) -> None:
    """``rules[key] = (ok, what it must be)``; the first broken rule raises
    ``ValueError("key=value: must be …")``, which :mod:`inat_lightning.config` prefixes with the
    config node's key (``data.batch_size=0: must be >= 1``)."""
    for key, (ok, want) in rules.items():
        if not ok:
            raise ValueError(f"{key}={values.get(key)!r}: must be {want}")


def require_numbers(values: Mapping[str, Any], ints: tuple[str, ...], floats: tuple[str, ...] = ()):
    """Each named value an int (``ints``) or a number (``floats``), or ``None`` when it may be;
    checked before the rules of :func:`require` compare them: ``batch_size=abc`` is
    ``ValueError("batch_size='abc': must be an integer")``, not a ``TypeError``."""
    for key in ints:
        v = values.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            raise ValueError(f"{key}={v!r}: must be an integer")
    for key in floats:
        v = values.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float)):
            raise ValueError(f"{key}={v!r}: must be a number")
