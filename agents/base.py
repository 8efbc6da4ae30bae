"""What a trainable agent offers the experiment driver (experiments/core/training.py).

The driver owns the loop: it calls `train_iteration()` until the step budget is
spent, logs the returned scalars under `train/`, evaluates `policy()` with the
one evaluation harness, and checkpoints with `save()` / `restore()`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from agents.policy import Policy

# Wall-clock scalars of train_iteration(): they differ between two runs of the same seed (everything else
# must not). sample_s and learn_s split iteration_s; pretrain_s is a warm start before the first iteration.
TIMING_KEYS = ("env_steps_per_s", "iteration_s", "sample_s", "learn_s", "pretrain_s")


class TrainableAgent(ABC):
    name: str = "agent"

    @property
    @abstractmethod
    def env_steps(self) -> int:
        """Environment (user) steps sampled so far, over the agent's whole life (restores included)."""

    @abstractmethod
    def train_iteration(self) -> dict[str, float]:
        """Run one training iteration; return scalars (e.g. policy_loss, episode_return_mean, and TIMING_KEYS)."""

    @abstractmethod
    def policy(self) -> Policy:
        """The current greedy policy, for evaluation on CPU."""

    @abstractmethod
    def save(self, path: Path) -> None:
        """Write a checkpoint into the directory `path`."""

    @abstractmethod
    def restore(self, path: Path) -> None:
        """Load a checkpoint written by `save`; a missing or incompatible one is a ValueError naming it."""

    def hparams(self) -> dict[str, Any]:
        """Hyperparameters to log next to the results."""
        return {}

    def close(self) -> None:  # noqa: B027  a default no-op, not an abstract method
        """Release processes and resources."""
