"""The one interface every agent and baseline is evaluated through."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """Maps a batched observation to a batch of actions.

    act(obs) -> actions: obs is the vector env's dict (leading user axis N);
    actions are candidate indices [N] (or [N, K] for slates).
    Optional: scores(obs) -> [N, C], the candidate scores a ranking policy serves by (offline
    ranking metrics read them). Optional hooks, called by the evaluation harness when present:
    bind(env) before an evaluation (oracles read the true state through it), and
    observe(obs, actions, rewards, info) after each step (online learners): obs is what act()
    saw, rewards [N], info the vector env's step info: `info["position"]` [N] the clicked slate
    position (-1: no click), `info["served"]` [N] False where the slot was being reset (its
    action was ignored); the harness adds `info["evaluated"]` [N], True where the slot counts in
    the evaluation and was served this policy's own action, and `info["done"]` [N], True where the
    slot's user ended at this step (terminated or truncated).
    Optional, lifetime scenarios: serves_from_day (float T) and warmup (a Policy): a policy
    deployed on day T; the harness serves each user with `warmup` until their clock reaches T.
    """

    name: str

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


def slate_from_scores(scores: np.ndarray, slate_size: int) -> np.ndarray:
    """Actions from per-candidate scores [N, C]: argmax [N] or the top-K indices [N, K], best first.

    Ties go to the lower candidate index, for any slate size (deterministic).
    """
    if slate_size == 1:
        return scores.argmax(axis=1)
    return np.argsort(-scores, axis=1, kind="stable")[:, :slate_size]


class RandomPolicy:
    """Uniformly random candidates (a seeded reference point)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.slate_size = 1

    def bind(self, env: Any) -> None:
        self.slate_size = env.config.env.slate_size

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """[N, C] iid uniform scores (fresh at each call)."""
        return self.rng.random(obs["candidate_items"].shape)

    def position_probabilities(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """[N, K, C] 1 / C: a uniformly random ordered K-subset puts each candidate at each position
        with probability 1 / C (off-policy estimators read it)."""
        n, c = obs["candidate_items"].shape
        return np.full((n, self.slate_size, c), 1.0 / c)

    def slate_probability(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray:
        """[N] (C - K)! / C! for any slate [N, K] of distinct candidates."""
        n, c = obs["candidate_items"].shape
        return np.full(n, 1.0 / np.prod(np.arange(c - self.slate_size + 1, c + 1, dtype=np.float64)))

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        # Random scores, then the top-K: distinct items in the slate.
        return slate_from_scores(self.scores(obs), self.slate_size)
