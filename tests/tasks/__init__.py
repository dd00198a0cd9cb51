"""Tests of the commands as a user runs them: train, evaluate, predict, the demo, config checks."""
