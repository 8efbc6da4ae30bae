"""Gymnasium environments over the simulator, scenario presets, and an SB3 adapter.

`gymnasium.make("DriftRec-v0", scenario="mixed")` gives one user;
`gymnasium.make_vec("DriftRec-v0", num_envs=N, vectorization_mode="vector_entry_point")`
steps N users in one call.
"""

import gymnasium

from envs.config import PRESETS, EnvParams, ScenarioConfig, make_scenario
from envs.single import RecEnv
from envs.vector import RecVectorEnv

ENV_ID = "DriftRec-v0"

if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="envs.single:RecEnv", vector_entry_point="envs.vector:RecVectorEnv")

__all__ = ["ENV_ID", "PRESETS", "EnvParams", "ScenarioConfig", "make_scenario", "RecEnv", "RecVectorEnv"]
