"""Reference policies that read the true user state (never available to a real recommender).

MyopicOracle maximises the immediate expected engagement. SessionOracle
maximises expected watch time per minute of session budget spent: it trades a
click now against the session it keeps alive.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from agents.policy import slate_from_scores


class MyopicOracle:
    """argmax over candidates of P(click) * E[watch time] under the true state."""

    name = "oracle-myopic"

    def __init__(self) -> None:
        self.env = None

    def bind(self, env: Any) -> None:
        self.env = env

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.env is None:
            raise RuntimeError("MyopicOracle needs bind(env) before act()")
        scores = self.env.world.expected_engagement(np.asarray(obs["candidate_items"], dtype=np.int64))
        return slate_from_scores(scores, self.env.config.env.slate_size)


def watch_per_budget(world: Any, items: np.ndarray) -> np.ndarray:
    """[N, C] expected watch time per expected minute of session budget spent, for `items` [N, C]."""
    watch = world.expected_engagement(items)
    r = world.config.response
    cost = r.browse_cost + watch * (1.0 - r.quality_refund * (2.0 * world.catalog.quality[items] - 1.0))
    return watch / cost


class SessionOracle:
    """Long-horizon-aware reference: maximises expected watch time per minute of session budget.

    A session ends when its budget is spent; each step costs browsing time plus the
    watch time, less a refund for quality. With a fixed budget, total watch time is
    maximised (as in a fractional knapsack) by the best watch-per-budget ratio, which
    favours good content over clickbait and keeps the session alive.
    """

    name = "oracle-session"

    def __init__(self) -> None:
        self.env = None

    def bind(self, env: Any) -> None:
        self.env = env

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.env is None:
            raise RuntimeError("SessionOracle needs bind(env) before act()")
        scores = watch_per_budget(self.env.world, np.asarray(obs["candidate_items"], dtype=np.int64))
        return slate_from_scores(scores, self.env.config.env.slate_size)
