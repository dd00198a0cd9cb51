"""Tests of manifests, splits, near-duplicates, taxonomy, cue boxes and the data module."""
