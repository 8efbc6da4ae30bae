"""Reference policies that read the true user state (never available to a real recommender).

MyopicOracle maximises the immediate expected engagement. SessionOracle
maximises expected watch time per minute of session budget spent: it trades a
click now against the session it keeps alive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.policy import slate_from_scores
from simulator.params import check_int, check_range


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
    """[N, C] expected watch time per expected minute of session budget spent, for `items` [N, C].

    The simulator's own `World.watch_per_budget` (its expected engagement over its budget
    cost), so the oracles follow any change of the simulated dynamics.
    """
    return world.watch_per_budget(items)


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
            raise RuntimeError(f"{type(self).__name__} needs bind(env) before act()")
        world = self.env.world
        items = np.asarray(obs["candidate_items"], dtype=np.int64)
        scores = world.watch_per_budget(items, state=self.planning_state(world))
        return slate_from_scores(scores, self.env.config.env.slate_size)

    def planning_state(self, world: Any) -> Any:
        """The users' state the plan reads: the true one (None); the variants below replace it."""
        return None


class StaleStateOracle(SessionOracle):
    """The session oracle with a stale picture of each user: it plans with the user's tastes as
    they were at the start of the episode (before any drift or shock: `World.state_at_start`),
    and with satisfaction, budget and history as now.

    Against the session oracle on the same users, it measures what drift costs a recommender
    that stops following the user: the two tie when nothing drifts.
    """

    name = "oracle-stale"

    def planning_state(self, world: Any) -> Any:
        return world.state_at_start()


class CommunityOracle(SessionOracle):
    """The session oracle that knows each user's taste community and nothing more of their tastes:
    it plans with the community's average member's interests (`World.state_of_community`), with
    satiation, satisfaction, budget and history as now.

    Against the session oracle on the same users it measures what a user's own tastes are worth
    beyond their community's, which only more of the history reveals (a history tells other things
    too, such as what the user is tired of). The two tie when users are their community
    (`users.community_strength` 1) and nothing drifts.
    """

    name = "oracle-community"

    def planning_state(self, world: Any) -> Any:
        return world.state_of_community()


@dataclass(frozen=True)
class LifetimeOracleParams:
    """How much `oracle-lifetime` values the next visit (the run config's `algo:` section)."""

    visit_weight: float = 4.0  # score = watch per budget minute x exp(visit_weight x (experience - 1/2))

    def __post_init__(self) -> None:
        check_range("algo", "visit_weight", self.visit_weight, 0.0, 100.0)


class LifetimeOracle(SessionOracle):
    """A long-horizon reference for lifetime worlds: values tomorrow's visit as well as tonight's.

    The session oracle's watch time per budget minute, weighted by how the step will feel
    (`World.expected_experience`: the personal value, less the letdown of clickbait). How a
    session feels at its end decides whether, and how soon, the user comes back
    (`simulator.lifetime`), so a step that satisfies is worth more than its minutes. With
    `visit_weight` 0 it is the session oracle.
    """

    name = "oracle-lifetime"

    def __init__(self, params: LifetimeOracleParams = LifetimeOracleParams()) -> None:
        super().__init__()
        self.params = params

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.env is None:
            raise RuntimeError("LifetimeOracle needs bind(env) before act()")
        world = self.env.world
        items = np.asarray(obs["candidate_items"], dtype=np.int64)
        felt = world.expected_experience(items)
        scores = world.watch_per_budget(items) * np.exp(np.float32(self.params.visit_weight) * (felt - 0.5))
        return slate_from_scores(scores, self.env.config.env.slate_size)


@dataclass(frozen=True)
class LookaheadParams:
    """The lookahead oracle's planning budget (the run config's `algo:` section)."""

    top: int = 3  # candidates (by the session oracle's score) planned over
    rollouts: int = 8  # simulator copies per candidate (>= 2: paired standard errors)
    horizon: int = 100  # steps each rollout looks ahead
    z: float = 2.0  # leave the session oracle's choice only if the gain exceeds z standard errors

    def __post_init__(self) -> None:
        check_int("algo", "top", self.top, 1)
        check_int("algo", "rollouts", self.rollouts, 2)
        check_int("algo", "horizon", self.horizon, 1)
        check_range("algo", "z", self.z, 0.0)


class LookaheadOracle:
    """Plans with copies of the true simulator (a rollout algorithm over the session oracle).

    Each step, the session oracle's `top` best candidates are each tried in `rollouts`
    copies of every user; the copies then follow the session oracle until the episode
    ends (or `horizon` steps). Copies of one user share their random numbers across
    candidates (common random numbers), so paired differences measure the action, not
    the luck. The oracle deviates from the session oracle's choice only when another
    candidate's paired gain is significant (mean > `z` standard errors): a single step
    moves a session's return by little, and chasing rollout noise would cost more.
    """

    name = "oracle-lookahead"

    def __init__(self, params: LookaheadParams = LookaheadParams(), seed: int = 0) -> None:
        self.params = params
        self.top, self.rollouts, self.horizon, self.z = params.top, params.rollouts, params.horizon, params.z
        self.rng = np.random.default_rng(seed)
        self.env = None

    def bind(self, env: Any) -> None:
        self.env = env

    def plan(self, core: Any) -> tuple[np.ndarray, np.ndarray]:
        """(shortlist [N, M] candidate indices, session oracle's first; simulated returns [N, M, R])."""
        n, c = core.candidates.shape
        m = min(self.top, c)
        base = watch_per_budget(core.world, core.candidates)
        shortlist = np.argsort(-base, axis=1, kind="stable")[:, :m]
        copies = m * self.rollouts
        sim = core.tile(copies, seed=int(self.rng.integers(2**31)), noise_groups=self.rollouts)
        action = np.repeat(shortlist, self.rollouts, axis=1).reshape(-1)  # copy j tries shortlist[j // R]
        total = np.zeros(n * copies)
        alive = np.ones(n * copies, dtype=bool)
        for h in range(self.horizon):
            if h > 0:
                action = watch_per_budget(sim.world, sim.candidates).argmax(axis=1)
            result, reward, truncated = sim.step(action[:, None])
            total += np.where(alive, reward, 0.0)
            alive &= ~(result.terminated | truncated)
            if not alive.any():
                break
        return shortlist, total.reshape(n, m, self.rollouts)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        if self.env is None:
            raise RuntimeError("LookaheadOracle needs bind(env) before act()")
        core = self.env.core
        if not np.array_equal(np.asarray(obs["candidate_items"]), core.candidates):
            raise RuntimeError("LookaheadOracle: the observation does not match the bound env's current state")
        shortlist, returns = self.plan(core)
        gain = returns - returns[:, :1, :]  # paired with the session oracle's choice
        mean = gain.mean(axis=2)
        se = gain.std(axis=2, ddof=1) / np.sqrt(self.rollouts)
        score = np.where(mean > self.z * se, mean, -np.inf)
        score[:, 0] = 0.0  # keep the base choice unless beaten
        rows = np.arange(core.n_users)
        best = shortlist[rows, score.argmax(axis=1)]
        k = self.env.config.env.slate_size
        if k == 1:
            return best
        scores = watch_per_budget(core.world, core.candidates)
        scores[rows, best] = np.inf  # the planned item on top, the rest by the session oracle
        return slate_from_scores(scores, k)
