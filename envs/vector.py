"""N users stepped in one call: a native `gymnasium.vector.VectorEnv` (NEXT_STEP autoreset)."""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.config import ScenarioConfig, make_scenario
from envs.core import RecommenderCore


class RecVectorEnv(VectorEnv):
    """`num_envs` independent sessions over one batched simulator.

    Autoreset is NEXT_STEP (what RLlib expects): the step after an episode ends
    resets that slot, returning its first observation with reward 0 and the
    action for that slot ignored. With the social family on, slots are linked
    through the social graph (users influence their neighbours).
    """

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, num_envs: int = 16, scenario: str | ScenarioConfig = "mixed",
                 overrides: Mapping[str, Any] | None = None, config_file: str | None = None,
                 seed: int | None = None, **_: Any) -> None:
        self.config = scenario if isinstance(scenario, ScenarioConfig) else make_scenario(scenario, overrides,
                                                                                          config_file)
        self.num_envs = int(num_envs)
        self.core = RecommenderCore(self.config, self.num_envs, seed)
        self.single_observation_space = self.core.single_observation_space
        self.single_action_space = self.core.single_action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    @property
    def world(self):
        """The simulator (ground truth lives here, not in the observation)."""
        return self.core.world

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        if seed is not None:
            self.core.reseed(seed)
        else:
            self.core.reset_users(np.ones(self.num_envs, dtype=bool))
        self._autoreset[:] = False
        return self.core.observations(), {}

    def step(self, actions):
        resetting = self._autoreset
        # Actions of slots being reset are ignored (their shape is still checked).
        slates = self.core.check_actions(actions, ignore=resetting)
        result, reward, truncated = self.core.step(slates)
        terminated = result.terminated.copy()
        if resetting.any():
            self.core.reset_users(resetting)
            reward = np.where(resetting, np.float32(0.0), reward)
            terminated[resetting] = False
            truncated[resetting] = False
        self._autoreset = terminated | truncated
        # Per-slot outcome arrays [N]; `served` is False for slots reset this step (action ignored).
        position = np.where(resetting, -1, result.position)
        info = {"served": ~resetting, "clicked": position >= 0, "position": position,
                "item": np.where(resetting, -1, result.item), "watch_time": reward,
                "completion": np.where(resetting, np.float32(0.0), result.completion)}
        return self.core.observations(), reward, terminated, truncated, info
