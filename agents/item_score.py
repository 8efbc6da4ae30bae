"""User-blind baselines: policies that score candidates from item features alone.

They never read the history, the context or the user: every user is served by the same
function of what the platform knows of an item (topic mixture, mean rating, measured
attractiveness, length, popularity). A simulator poses a recommendation problem only if
these lose clearly to policies that know the user; experiments/validity.py checks that.

- ItemScorePolicy: a linear score over the item features. `max_feature` gives the classic
  heuristics (highest rating, most popular). `tune_item_score` picks the weights by a small
  search on users of a separate seed: the strongest user-blind policy, run by name as
  `item-score`.
- FeatureModelPolicy: the simulator's own response model applied to the item features with
  the user left out (fit 0, satisfaction at its start): expected watch time per minute of
  budget, as the session oracle would rank items for a user it knows nothing about.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.policy import bind, slate_from_scores
from envs.config import ScenarioConfig
from envs.vector import RecVectorEnv
from simulator import response
from simulator.params import check_int
from simulator.users import length_fit, length_prior

# Columns after the T topic columns of the item features (envs.core.observation_space).
QUALITY, ATTRACTIVENESS, LENGTH, POPULARITY = range(4)


class ItemScorePolicy:
    """Greedy on `candidate_features @ weights`: weights [F_item] (F_item = T + 4), one score per item.

    act(obs) -> [N] best candidate, or [N, K] top-K best first. Reads only candidate_features.
    """

    def __init__(self, weights: np.ndarray, name: str = "item-score") -> None:
        w = np.asarray(weights, dtype=np.float64)
        if w.ndim != 1 or not np.all(np.isfinite(w)):
            raise ValueError(f"ItemScorePolicy.weights must be a finite 1-D array, got {w!r}")
        self.weights, self.name, self.slate_size = w, name, 1

    @classmethod
    def max_feature(cls, n_topics: int, column: int, name: str) -> ItemScorePolicy:
        """Greedy on one non-topic feature (QUALITY, ATTRACTIVENESS, LENGTH or POPULARITY)."""
        weights = np.zeros(n_topics + 4)
        weights[n_topics + column] = 1.0
        return cls(weights, name)

    def bind(self, env: Any) -> None:
        self.slate_size = env.config.env.slate_size

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        features = np.asarray(obs["candidate_features"], dtype=np.float64)  # [N, C, F]
        if features.shape[-1] != self.weights.shape[0]:
            raise ValueError(f"{features.shape[-1]} item features but {self.weights.shape[0]} weights")
        return features @ self.weights

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return slate_from_scores(self.scores(obs), self.slate_size)


class FeatureModelPolicy:
    """Expected watch per budget minute from item features, with the user left out.

    The rating stands in for quality, the measured attractiveness for attractiveness, the
    topic fit is 0 (the length fit that of a user who likes the catalog's typical length) and
    satisfaction is where every user starts; then the simulator's own
    formulas (choice, personal value, completion, budget cost) score each candidate.
    """

    name = "feature-model"

    def __init__(self) -> None:
        self.config: ScenarioConfig | None = None

    def bind(self, env: Any) -> None:
        self.config = env.config

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.config is None:
            raise RuntimeError("FeatureModelPolicy needs bind(env) before act()")
        r, cat = self.config.world.response, self.config.world.catalog
        features = np.asarray(obs["candidate_features"], dtype=np.float32)
        t = features.shape[-1] - 4
        quality, attract, length = (features[..., t + col] for col in (QUALITY, ATTRACTIVENESS, LENGTH))
        # Topic fit 0 (the user unknown); length fit that of a user of the typical preferred length.
        fit = np.zeros_like(quality)
        if self.config.world.users.length_taste:
            minutes = np.maximum(length * np.float32(cat.length_max), np.float32(1e-6))
            centre, spread = length_prior(cat)
            fit = length_fit(np.log(minutes), centre, self.config.world.users.length_taste, spread)
        outside = response.no_click_utility(np.float32(self.config.world.users.satisfaction_init), r)
        p_click = 1.0 / (1.0 + np.exp(outside - np.float32(r.attractiveness_weight) * attract))
        value = response.personal_value(fit, quality, r)
        watch = p_click * length * np.float32(cat.length_max) * response.completion(value, attract, r)
        return watch / response.budget_cost(watch, value, r)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return slate_from_scores(self.scores(obs), self.config.env.slate_size)


@dataclass(frozen=True)
class ItemScoreParams:
    """The weight search of `item-score` (the run config's `algo:` section)."""

    candidates: int = 24  # random weight vectors tried, besides the heuristics
    refinements: int = 16  # perturbations of the best one
    tune_users: int = 256  # users of the tuning seed each candidate is scored on

    def __post_init__(self) -> None:
        check_int("algo", "candidates", self.candidates, 0)
        check_int("algo", "refinements", self.refinements, 0)
        check_int("algo", "tune_users", self.tune_users, 1)


def mean_return(policy: Any, config: ScenarioConfig, n_users: int, seed: int) -> float:
    """Mean minutes watched in one episode per user, for tuning (evaluation uses the harness)."""
    env = RecVectorEnv(num_envs=n_users, scenario=config, seed=seed)
    bind(policy, env)
    obs, _ = env.reset(seed=seed)
    total, active = np.zeros(n_users), np.ones(n_users, dtype=bool)
    while active.any():
        obs, reward, terminated, truncated, _ = env.step(policy.act(obs))
        total += np.where(active, reward, 0.0)
        active &= ~(terminated | truncated)
    return float(total.mean())


def tune_item_score(config: ScenarioConfig, params: ItemScoreParams, seed: int) -> tuple[ItemScorePolicy, float]:
    """The linear item score with the best mean return on `tune_users` users of `seed`.

    Tried: each single non-topic feature (+ and -), `candidates` random directions, then
    `refinements` perturbations of the best so far. Returns (policy, its tuning return).
    """
    t = config.world.catalog.n_topics
    rng = np.random.default_rng(seed)
    dim = t + 4
    tried = [np.eye(dim)[t + col] * sign for col in range(4) for sign in (1.0, -1.0)]
    tried += list(rng.normal(size=(params.candidates, dim)))

    def score(w: np.ndarray) -> float:
        return mean_return(ItemScorePolicy(w), config, params.tune_users, seed)

    results = [(score(w), w) for w in tried]
    best_return, best = max(results, key=lambda r: r[0])
    for _ in range(params.refinements):
        w = best + 0.3 * np.linalg.norm(best) * rng.normal(size=dim) / np.sqrt(dim)
        r = score(w)
        if r > best_return:
            best_return, best = r, w
    return ItemScorePolicy(best, "item-score"), best_return
