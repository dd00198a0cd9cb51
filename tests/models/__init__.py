"""Tests of the classifier's parts: backbones, metrics, the place prior, the out-of-set rule."""
