"""inat-lightning: iNaturalist photos to a trustworthy species classifier."""

__version__ = "0.2.0"
