"""Tests of rules across the house: room sizes, true docs and README, untrusted files, paths,
registries."""
