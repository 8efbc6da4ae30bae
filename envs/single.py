"""One user at a time: a plain `gymnasium.Env` over the batched core (N = 1)."""
from __future__ import annotations

from typing import Any, Mapping

import gymnasium as gym
import numpy as np

from envs.config import ScenarioConfig, make_scenario
from envs.core import RecommenderCore


class RecEnv(gym.Env):
    """A recommendation session with one drifting user.

    Observation: Dict of Boxes (see `envs.core.observation_space`): history [H, ...]
    with mask, candidates [C, ...], context. Action: Discrete(C), or
    MultiDiscrete([C] * K) for a slate. Reward: minutes watched. Terminated: the
    user left or spent the budget; truncated: `env.max_steps` reached.
    """

    metadata = {"render_modes": []}

    def __init__(self, scenario: str | ScenarioConfig = "mixed", overrides: Mapping[str, Any] | None = None,
                 config_file: str | None = None, seed: int | None = None) -> None:
        self.config = scenario if isinstance(scenario, ScenarioConfig) else make_scenario(scenario, overrides,
                                                                                          config_file)
        self.core = RecommenderCore(self.config, 1, seed)
        self.observation_space = self.core.single_observation_space
        self.action_space = self.core.single_action_space
        self._done = False

    @property
    def world(self):
        """The simulator (ground truth lives here, not in the observation)."""
        return self.core.world

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.core.reseed(seed)
        else:
            self.core.reset_users(np.ones(1, dtype=bool))
        self._done = False
        return self._obs(), {}

    def step(self, action):
        if self._done:
            raise RuntimeError("step() called on a finished episode; call reset() first")
        slate = self.core.check_actions(np.asarray(action)[None])  # ValueError naming what is wrong
        result, reward, truncated = self.core.step(slate)
        terminated, trunc = bool(result.terminated[0]), bool(truncated[0])
        self._done = terminated or trunc
        info = {"clicked": bool(result.clicked[0]), "item": int(result.item[0]),
                "watch_time": float(result.watch_time[0])}
        return self._obs(), float(reward[0]), terminated, trunc, info

    def _obs(self) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.core.observations().items()}
