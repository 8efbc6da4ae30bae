"""Agents: the shared torch encoder, RL agents and baselines."""
