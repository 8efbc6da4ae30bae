"""Agents from outside the package, as a researcher writes them in their own folder: a Policy class with
its own settings, a trainable agent (a class and a factory of it), and the mistakes a module path can
hold. The tests name them `agent_outside:FreshPopular`, `agent_outside:ItemValueLearner` and so on (this
folder on the path), as `--agent` takes them; nothing here is imported by the package.

FreshPopular serves the most popular candidate the user has not seen lately. ItemValueLearner learns
each item's mean watch time from its own serving (epsilon-greedy over the candidates) and serves the
best: a real, if small, training loop with checkpoints.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agents.base import TrainableAgent
from agents.policy import slate_from_scores
from agents.registry import AgentSpec
from envs import RecVectorEnv
from simulator.params import check_int, check_range


@dataclass(frozen=True)
class FreshParams:
    repeat_penalty: float = 1.0  # score lost by a candidate the user's history holds already
    recent: int = 16  # history entries that count as seen

    def __post_init__(self) -> None:
        check_range("algo", "repeat_penalty", self.repeat_penalty, 0.0, 100.0)
        check_int("algo", "recent", self.recent, 1)


class FreshPopular:
    """Serves the most popular candidate the user has not seen lately."""

    name = "fresh-popular"

    def __init__(self, params: FreshParams) -> None:
        self.params, self.slate_size = params, 1

    def bind(self, env) -> None:
        self.slate_size = env.config.env.slate_size

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        r = self.params.recent
        history = np.where(obs["history_mask"][:, -r:] > 0, obs["history_items"][:, -r:], -1)  # [N, r]
        seen = (obs["candidate_items"][:, :, None] == history[:, None, :]).any(axis=2)  # [N, C]
        return obs["candidate_features"][..., -1] - self.params.repeat_penalty * seen

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return slate_from_scores(self.scores(obs), self.slate_size)


@dataclass(frozen=True)
class LearnerParams:
    num_envs: int = 32  # users served side by side while learning
    steps_per_iteration: int = 16
    epsilon: float = 0.2  # share of random candidates served

    def __post_init__(self) -> None:
        check_int("algo", "num_envs", self.num_envs, 1)
        check_int("algo", "steps_per_iteration", self.steps_per_iteration, 1)
        check_range("algo", "epsilon", self.epsilon, 0.0, 1.0)


class ItemValues:
    """The greedy policy of ItemValueLearner: each candidate's mean watch time when served."""

    name = "item-value"

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def scores(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.values[obs["candidate_items"]]

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.scores(obs).argmax(axis=1)


class ItemValueLearner(TrainableAgent):
    """Learns each item's mean watch time from its own serving (epsilon-greedy) and serves the best."""

    name = "item-value"

    def __init__(self, scenario, params: LearnerParams, ctx) -> None:
        if scenario.env.slate_size != 1:
            raise ValueError(f"item-value serves one item a step, not slates of {scenario.env.slate_size}")
        self.params, self.seed = params, ctx.seed
        self.env = RecVectorEnv(num_envs=params.num_envs, scenario=scenario, seed=ctx.seed)
        self.total, self.count = np.zeros(self.env.core.n_items), np.zeros(self.env.core.n_items)
        self.rng = np.random.default_rng(ctx.seed)
        self.obs, _ = self.env.reset(seed=ctx.seed)
        self._steps = 0

    @property
    def env_steps(self) -> int:
        return self._steps

    def values(self) -> np.ndarray:
        return self.total / np.maximum(self.count, 1.0)

    def train_iteration(self) -> dict[str, float]:
        started, watched = time.perf_counter(), []
        for _ in range(self.params.steps_per_iteration):
            greedy = ItemValues(self.values()).act(self.obs)
            explore = self.rng.random(len(greedy)) < self.params.epsilon
            actions = np.where(explore, self.rng.integers(0, self.obs["candidate_items"].shape[1], len(greedy)), greedy)
            served = self.obs["candidate_items"][np.arange(len(actions)), actions]
            self.obs, reward, _, _, _ = self.env.step(actions)
            np.add.at(self.total, served, reward)
            np.add.at(self.count, served, 1.0)
            watched.append(reward.mean())
            self._steps += len(actions)
        seconds = time.perf_counter() - started
        n = self.params.steps_per_iteration * self.params.num_envs
        return {"watch_per_step": float(np.mean(watched)), "env_steps_per_s": n / seconds, "iteration_s": seconds}

    def policy(self) -> ItemValues:
        return ItemValues(self.values())

    def save(self, path: Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        np.savez(Path(path) / "values.npz", total=self.total, count=self.count)
        (Path(path) / "learner.json").write_text(json.dumps({"steps": self._steps}))

    def restore(self, path: Path) -> None:
        if not (Path(path) / "values.npz").is_file():
            raise ValueError(f"no item-value checkpoint in {path}")
        saved = np.load(Path(path) / "values.npz")
        self.total, self.count = saved["total"], saved["count"]
        self._steps = int(json.loads((Path(path) / "learner.json").read_text())["steps"])


def make_learner(scenario, params: LearnerParams, ctx) -> ItemValueLearner:
    """A factory of the learner: it trains, as its return annotation says."""
    return ItemValueLearner(scenario, params, ctx)


# ------------------------------------------------------------------ what a module path can get wrong
class NotAPolicy:
    """A class without act(obs)."""

    name = "nothing"


def broken(scenario, ctx):
    """A factory that fails."""
    raise RuntimeError("no model file here")


def returns_a_number(scenario):
    """A factory that returns what no tool can serve."""
    return 42


def needs_a_model_path(scenario, model_path):
    """A factory that needs what driftrec cannot give."""
    raise AssertionError("never called")


def trains_but_says_not(scenario, params: LearnerParams, ctx):
    """A factory of a trainable agent without its return annotation."""
    return ItemValueLearner(scenario, params, ctx)


FRESH = FreshPopular(FreshParams())  # an instance: a module path names a class or a factory
FRESH_SPEC = AgentSpec("fresh", "fresh popular, with its smoke sizes", FreshPopular, FreshParams, smoke={"recent": 4})
