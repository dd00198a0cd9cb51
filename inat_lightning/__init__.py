"""inat-lightning: iNaturalist photos to a trustworthy species classifier."""

from inat_lightning.runs.resolvers import register as _register_resolvers

__version__ = "0.1.0"

_register_resolvers()
