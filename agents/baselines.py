"""Non-RL baselines behind the Policy protocol: logged popularity and a LinUCB contextual bandit.

PopularityPolicy is fitted once on logged impressions (agents.logs schema) and never
adapts. LinUCBPolicy learns online from the rewards the evaluation harness feeds back
through observe(); it sees only the observation, never the true user state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from agents.logs import validate_logs
from agents.policy import slate_from_scores
from simulator.params import check_range

POPULARITY_SIGNALS = ("watch_time", "click")


class PopularityPolicy:
    """Ranks candidates by a per-item score fitted on logs (e.g. total logged watch time).

    item_scores [n_items]; act(obs) -> [N] candidate indices, or [N, K] best first for slates.
    """

    name = "popularity"

    def __init__(self, item_scores: np.ndarray) -> None:
        scores = np.asarray(item_scores, dtype=np.float64)
        if scores.ndim != 1 or scores.size == 0:
            raise ValueError(f"item_scores must be a non-empty 1-D array, got shape {scores.shape}")
        if not np.all(np.isfinite(scores)):
            raise ValueError("item_scores must be finite")
        self.item_scores = scores
        self.slate_size = 1

    @classmethod
    def from_logs(cls, logs: pd.DataFrame, n_items: int, signal: str = "watch_time") -> PopularityPolicy:
        """Item score = sum of `signal` ("watch_time" or "click") over the logged impressions of the item."""
        if signal not in POPULARITY_SIGNALS:
            raise ValueError(f"signal must be one of {POPULARITY_SIGNALS}, got {signal!r}")
        logs = validate_logs(logs, n_items)
        items = logs["item"].to_numpy(dtype=np.int64)
        weights = logs[signal].to_numpy(dtype=np.float64)
        return cls(np.bincount(items, weights=weights, minlength=n_items))

    def bind(self, env: Any) -> None:
        self.slate_size = env.config.env.slate_size

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """[N, C] the logged score of each candidate."""
        items = np.asarray(obs["candidate_items"], dtype=np.int64)  # [N, C]
        # Items that arrived after the logs were collected (catalog injection) have no
        # logged evidence: score 0, like logged items nobody watched.
        known = (items >= 0) & (items < self.item_scores.size)
        return np.where(known, self.item_scores[np.where(known, items, 0)], 0.0)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return slate_from_scores(self.scores(obs), self.slate_size)


@dataclass(frozen=True)
class BanditParams:
    """LinUCB's settings (the run config's `algo:` section)."""

    alpha: float = 1.0  # width of the upper confidence bound
    ridge: float = 1.0  # prior precision of the linear model

    def __post_init__(self) -> None:
        check_range("algo", "alpha", self.alpha, 0.0)
        check_range("algo", "ridge", self.ridge, 0.0, lo_open=True)


class LinUCBPolicy:
    """LinUCB with one ridge-regression model shared by all users and items (disjoint arms
    would not generalise: candidates change every step).

    x(user, candidate) [D = F + T + 3 + 1]: the candidate's item features (F = T + 4),
    candidate topic mixture * the user's recent taste profile (T), context (3), bias (1).
    The taste profile is the history-mask-weighted mean of (topic mixture of each history
    item * clicked), with topic mixtures looked up in the catalog feature table.
    score = x.theta + alpha * sqrt(x^T A^-1 x), theta = A^-1 b, A = ridge * I + sum x x^T,
    b = sum reward * x. act(obs) -> [N] or [N, K] (top-K by score, best first).

    observe() updates with every slot actually shown (info["served"]), vectorised over users;
    in a slate, the clicked slot (info["position"]) gets the reward and the others 0.
    The model persists across bind() calls (it keeps learning over evaluations); reset() clears it.
    """

    name = "bandit"

    def __init__(
        self,
        params: BanditParams = BanditParams(),
        item_features: np.ndarray | None = None,
        n_topics: int | None = None,
        context_dim: int = 3,
    ) -> None:
        self.params = params
        self.alpha = float(params.alpha)
        self.ridge = float(params.ridge)
        self.slate_size = 1
        self.item_topics: np.ndarray | None = None
        self.dim: int | None = None
        if item_features is not None:
            self._set_catalog(np.asarray(item_features), n_topics, context_dim)

    # ---------------------------------------------------------------- set-up
    def _set_catalog(self, item_features: np.ndarray, n_topics: int | None, context_dim: int = 3) -> None:
        if item_features.ndim != 2:
            raise ValueError(f"item_features must be [n_items, T + 4], got shape {item_features.shape}")
        f = item_features.shape[1]
        t = f - 4 if n_topics is None else int(n_topics)
        if not 1 <= t <= f:
            raise ValueError(f"n_topics must be in [1, {f}], got {t}")
        self.item_topics = np.asarray(item_features[:, :t], dtype=np.float64)
        dim = f + t + context_dim + 1
        if dim != self.dim:  # a different feature layout invalidates the model
            self.dim = dim
            self.reset()

    def bind(self, env: Any) -> None:
        self.slate_size = env.config.env.slate_size
        # The catalog table can grow (arrivals) between evaluations: always take the current one.
        context_dim = int(env.single_observation_space["context"].shape[-1])  # 7 on lifetimes
        self._set_catalog(np.asarray(env.core.item_features), env.world.catalog.n_topics, context_dim)

    def reset(self) -> None:
        """Forget everything learned: A = ridge * I, b = 0."""
        if self.dim is None:
            return
        self.A = self.ridge * np.eye(self.dim)
        self.b = np.zeros(self.dim)
        self.A_inv = np.eye(self.dim) / self.ridge
        self.theta = np.zeros(self.dim)
        self.n_updates = 0

    # -------------------------------------------------------------- features
    def features(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """x [N, C, D] for every user and candidate of a batched observation."""
        if self.item_topics is None:
            raise RuntimeError("LinUCBPolicy needs bind(env) (or item_features=...) before act()")
        cand = np.asarray(obs["candidate_features"], dtype=np.float64)  # [N, C, F]
        n, c, _ = cand.shape
        t = self.item_topics.shape[1]
        hist = np.clip(np.asarray(obs["history_items"], dtype=np.int64), 0, self.item_topics.shape[0] - 1)
        clicked = np.asarray(obs["history_features"], dtype=np.float64)[..., 0]  # [N, H]
        mask = np.asarray(obs["history_mask"], dtype=np.float64)  # [N, H]
        # Non-clicks stay in the denominator: a user who skips a lot has a weaker profile.
        weight = mask * clicked
        profile = np.einsum("nh,nht->nt", weight, self.item_topics[hist])
        profile /= np.maximum(mask.sum(axis=1, keepdims=True), 1.0)  # [N, T]
        context = np.asarray(obs["context"], dtype=np.float64)  # [N, F_ctx]
        return np.concatenate(
            [
                cand,
                cand[..., :t] * profile[:, None, :],
                np.broadcast_to(context[:, None, :], (n, c, context.shape[1])),
                np.ones((n, c, 1)),
            ],
            axis=2,
        )

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """UCB scores [N, C]."""
        x = self.features(obs)
        width = np.einsum("ncd,de,nce->nc", x, self.A_inv, x)
        return x @ self.theta + self.alpha * np.sqrt(np.maximum(width, 0.0))

    # ---------------------------------------------------------------- acting
    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return slate_from_scores(self.scores(obs), self.slate_size)

    # -------------------------------------------------------------- learning
    def update(self, x: np.ndarray, rewards: np.ndarray) -> None:
        """Add observations x [M, D] with rewards [M] to the ridge regression; refresh A^-1, theta."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        r = np.asarray(rewards, dtype=np.float64).reshape(-1)
        if x.shape[0] != r.shape[0]:
            raise ValueError(f"{x.shape[0]} feature rows but {r.shape[0]} rewards")
        if x.shape[0] == 0:
            return
        self.A += x.T @ x
        self.b += x.T @ r
        # One D x D inverse per step (D ~ 2T + 8), shared by every user's UCB width.
        self.A_inv = np.linalg.inv(self.A)
        self.theta = self.A_inv @ self.b
        self.n_updates += x.shape[0]

    def observe(
        self, obs: dict[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, info: dict[str, np.ndarray]
    ) -> None:
        """Learn from one step: obs before it, actions [N] or [N, K], rewards [N],
        `info["position"]` [N] (clicked slot, -1 none), `info["served"]` [N]."""
        x = self.features(obs)  # [N, C, D]
        n = x.shape[0]
        slates = np.asarray(actions, dtype=np.int64).reshape(n, -1)  # [N, K]
        position = np.asarray(info["position"]).reshape(n)
        served = np.asarray(info["served"], dtype=bool).reshape(n)
        rows = np.arange(n)
        target = np.zeros(slates.shape)
        clicked = position >= 0
        target[rows[clicked], position[clicked]] = np.asarray(rewards, dtype=np.float64).reshape(n)[clicked]
        self.update(x[rows[:, None], slates][served].reshape(-1, self.dim), target[served].reshape(-1))

    def fit_steps(self, steps: Any, batch: int = 4096) -> LinUCBPolicy:
        """Learn from logged steps (an agents.offline.LoggedSteps) as if it had served them: its ridge
        regression learns the slot rewards of the logged slates, `batch` steps at a time. Needs bind()."""
        clicked = np.where(steps.click.any(axis=1), steps.click.argmax(axis=1), -1)
        for start in range(0, len(steps), batch):
            rows = slice(start, start + batch)
            obs = {k: v[rows] for k, v in steps.obs.items()}
            info = {"position": clicked[rows], "served": np.ones(len(clicked[rows]), bool)}
            self.observe(obs, steps.slate[rows], steps.reward[rows], info)
        return self
