"""Hyperparameter sweeps on Ray Tune over any field of a run config."""
