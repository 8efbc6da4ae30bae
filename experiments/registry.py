"""Agents runnable by name from experiments/run.py (imported lazily: ray is slow to import)."""
from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class AgentEntry:
    module: str
    attr: str
    trainable: bool
    description: str

    def load(self):
        return getattr(importlib.import_module(self.module), self.attr)


AGENTS: dict[str, AgentEntry] = {
    "ppo": AgentEntry("agents.rllib_agent", "RLlibPPOAgent", True, "RLlib PPO (new API stack) with the shared encoder"),
    "sb3-ppo": AgentEntry("agents.sb3_agent", "SB3PPOAgent", True, "stable-baselines3 PPO with the shared encoder"),
    "random": AgentEntry("agents.policy", "RandomPolicy", False, "uniformly random candidates"),
    "oracle-myopic": AgentEntry("agents.oracles", "MyopicOracle", False,
                                "reads the true state; maximises immediate expected watch time"),
    "oracle-session": AgentEntry("agents.oracles", "SessionOracle", False,
                                 "reads the true state; maximises watch time per minute of session budget"),
}


def get_agent(name: str) -> AgentEntry:
    if name not in AGENTS:
        raise ValueError(f"unknown agent '{name}'; valid agents: {', '.join(AGENTS)}")
    return AGENTS[name]
