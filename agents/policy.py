"""The one interface every agent and baseline is evaluated through."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Policy(Protocol):
    """Maps a batched observation to a batch of actions.

    act(obs) -> actions: obs is the vector env's dict (leading user axis N);
    actions are candidate indices [N] (or [N, K] for slates).

    Optional hooks, each a Protocol of its own below, checked with isinstance (never by name):
    `Scorer` (scores: what offline ranking metrics read), `Binder` (bind: called before an
    evaluation), `Observer` (observe: an online learner), `Propensities` (its action
    distribution: what the off-policy estimators and the logs read), `DatedDeployment`
    (serves_from_day and warmup: a policy deployed on a date), `ServingStats` and `Fingerprinted`.
    """

    name: str

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


@runtime_checkable
class Scorer(Protocol):
    """A ranking policy: scores(obs) -> [N, C], the candidate scores it serves by, best highest (offline
    ranking metrics rank the candidates by them)."""

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...


@runtime_checkable
class Binder(Protocol):
    """bind(env) before an evaluation (or a log collection) on the vector env `env`: the slate size, the
    catalog's item features, and for oracles the true user state it reads."""

    def bind(self, env: Any) -> None: ...


@runtime_checkable
class Observer(Protocol):
    """An online learner: observe(obs, actions, rewards, info) after each step. obs is what act() saw,
    actions `[N]` or `[N, K]`, rewards `[N]`, info the vector env's step info: `info["position"] [N]` the
    clicked slate position (-1: no click), `info["served"] [N]` False where the slot was being reset (its
    action was ignored); the harness adds `info["evaluated"] [N]`, True where the slot counts in the
    evaluation and was served this policy's own action, and `info["done"] [N]`, True where the slot's user
    ended at this step (terminated or truncated)."""

    def observe(
        self, obs: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, info: dict[str, np.ndarray]
    ) -> None: ...


@runtime_checkable
class Propensities(Protocol):
    """A stochastic policy that knows its own action distribution: position_probabilities(obs) [N, K, C]
    the probability of each candidate at each slate position, slate_probability(obs, slates) [N] that of
    a whole slate [N, K]. The off-policy estimators read the first, logs record both as propensities."""

    def position_probabilities(self, obs: dict[str, np.ndarray]) -> np.ndarray: ...

    def slate_probability(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray: ...


@runtime_checkable
class DatedDeployment(Protocol):
    """A policy deployed on a date (lifetime scenarios): serves_from_day (float T) and warmup (a Policy,
    the platform's policy before T, or None: served from day 0). The harness serves each user with
    `warmup` until their own clock reaches T."""

    serves_from_day: float
    warmup: Policy | None


@runtime_checkable
class ServingStats(Protocol):
    """serving_stats() -> what a policy says of its own serving (refits, their time, a deployed model's
    staleness): columns a run adds to its final evaluation in results.csv."""

    def serving_stats(self) -> dict[str, float]: ...


@runtime_checkable
class Fingerprinted(Protocol):
    """fingerprint() -> a digest of everything that decides the policy's actions (its weights, not a
    critic's; its sampling settings): two policies with equal digests serve alike, so the training loop
    re-uses an evaluation during training instead of repeating it (a PPO critic warm-up moves no weight
    the policy reads)."""

    def fingerprint(self) -> str: ...


def deployment(policy: Any) -> tuple[Any, float]:
    """(warmup policy, day T) of a policy deployed on a date; (None, 0.0) for any other."""
    if isinstance(policy, DatedDeployment) and policy.warmup is not None:
        return policy.warmup, float(policy.serves_from_day)
    return None, 0.0


def bind(policy: Any, env: Any) -> None:
    """policy.bind(env) when the policy is a Binder."""
    if isinstance(policy, Binder):
        policy.bind(env)


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
