"""stable-baselines3 adapter: SB3's own VecEnv API over the batched core.

SB3 expects SAME_STEP autoreset: when a slot's episode ends, `step_wait` returns
the first observation of the next episode, with the final one in
`infos[i]["terminal_observation"]` and `infos[i]["TimeLimit.truncated"]` set for
step-cap endings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

from envs.config import ScenarioConfig, resolve_scenario
from envs.core import RecommenderCore


class SB3VecEnv(VecEnv):
    """`num_envs` users on one simulator, stepped in one call, for SB3 algorithms."""

    def __init__(
        self,
        num_envs: int = 16,
        scenario: str | ScenarioConfig = "mixed",
        overrides: Mapping[str, Any] | None = None,
        config_file: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.config = resolve_scenario(scenario, overrides, config_file)
        self.core = RecommenderCore(self.config, int(num_envs), seed)
        self.render_mode = None
        super().__init__(int(num_envs), self.core.single_observation_space, self.core.single_action_space)
        self._actions: np.ndarray | None = None
        self._next_seed: int | None = None

    @property
    def world(self):
        return self.core.world

    def seed(self, seed: int | None = None) -> Sequence[None | int]:
        self._next_seed = seed
        return [seed] * self.num_envs

    def reset(self) -> dict[str, np.ndarray]:
        if self._next_seed is not None:
            self.core.reseed(self._next_seed)
            self._next_seed = None
        else:
            self.core.reset_users(np.ones(self.num_envs, dtype=bool))
        return self.core.observations()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)

    def step_wait(self):
        if self._actions is None:
            raise RuntimeError("step_wait() called without step_async()")
        result, reward, truncated = self.core.step(self.core.check_actions(self._actions))
        self._actions = None
        done = result.terminated | truncated
        obs = self.core.observations()
        infos: list[dict[str, Any]] = [{} for _ in range(self.num_envs)]
        if done.any():
            for i in np.flatnonzero(done):  # only finished slots: SB3 wants one dict per slot
                infos[i]["terminal_observation"] = {k: v[i] for k, v in obs.items()}
                infos[i]["TimeLimit.truncated"] = bool(truncated[i])
            self.core.reset_users(done)
            obs = self.core.observations()
        return obs, reward.astype(np.float32), done, infos

    def close(self) -> None:
        pass

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return [getattr(self, attr_name)] * len(self._indices(indices))

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        setattr(self, attr_name, value)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        return [getattr(self, method_name)(*method_args, **method_kwargs)] * len(self._indices(indices))

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        if isinstance(indices, int):
            return [indices]
        return list(indices)
