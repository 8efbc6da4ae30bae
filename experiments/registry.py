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
    "random": AgentEntry("agents.factory", "build_random", False, "uniformly random candidates"),
    "popularity": AgentEntry("agents.factory", "build_popularity", False, "most-watched items in logged data"),
    "bandit": AgentEntry("agents.factory", "build_bandit", False, "LinUCB contextual bandit, learning online"),
    "sasrec": AgentEntry("agents.factory", "build_sasrec", False,
                         "supervised next-engagement Transformer (the shared encoder) trained on logs"),
    "gru4rec": AgentEntry("agents.factory", "build_gru4rec", False, "supervised GRU next-engagement model on logs"),
    "oracle-myopic": AgentEntry("agents.factory", "build_myopic", False,
                                "reads the true state; maximises immediate expected watch time"),
    "oracle-session": AgentEntry("agents.factory", "build_session", False,
                                 "reads the true state; maximises watch time per minute of session budget"),
    "oracle-lookahead": AgentEntry("agents.factory", "build_lookahead", False,
                                   "plans with copies of the true simulator (rollouts over oracle-session)"),
}


def get_agent(name: str) -> AgentEntry:
    if name not in AGENTS:
        raise ValueError(f"unknown agent '{name}'; valid agents: {', '.join(AGENTS)}")
    return AGENTS[name]
