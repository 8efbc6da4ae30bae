"""Gymnasium environments over the simulator, scenario presets, and an SB3 adapter.

`gymnasium.make("DriftRec-v0", scenario="mixed")` gives one user;
`gymnasium.make_vec("DriftRec-v0", num_envs=N, vectorization_mode="vector_entry_point")`
steps N users in one call. `DriftRec-Lifetime-v0` is the same on the `lifetime` preset:
an episode is one user's life of sessions and return visits over 60 days.
"""

import gymnasium

from envs.config import PRESETS, EnvParams, ScenarioConfig, make_scenario
from envs.single import RecEnv
from envs.vector import RecVectorEnv

ENV_ID = "DriftRec-v0"
LIFETIME_ENV_ID = "DriftRec-Lifetime-v0"  # the same envs on the `lifetime` preset: an episode is a user's life

for _id, _kwargs in ((ENV_ID, {}), (LIFETIME_ENV_ID, {"scenario": "lifetime"})):
    if _id not in gymnasium.registry:
        gymnasium.register(
            id=_id, entry_point="envs.single:RecEnv", vector_entry_point="envs.vector:RecVectorEnv", kwargs=_kwargs
        )

__all__ = [
    "ENV_ID",
    "LIFETIME_ENV_ID",
    "PRESETS",
    "EnvParams",
    "ScenarioConfig",
    "make_scenario",
    "RecEnv",
    "RecVectorEnv",
]
