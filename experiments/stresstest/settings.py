"""What a drift stress test runs: its settings, the drift families and the regimes they make."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.registry import RETRAIN_SUFFIX, get_agent, parse_variant
from envs.config import PRESETS, ScenarioConfig, make_scenario
from experiments.runs import DEVICES
from simulator.families import FAMILY_NAMES
from simulator.params import check_int, check_range, merge_overrides

NO_DRIFT = "none"  # the family name of the training regime itself

FAMILIES = FAMILY_NAMES  # simulator.families: a family's name is its config section too
DEFAULT_AGENTS = ("ppo", "sasrec", "sasrec-retrain", "bandit")
# --smoke: the grid at toy sizes (with runs.SMOKE_SCENARIO/SMOKE_MODEL and each agent's smoke settings).
STRESS_SMOKE = dict(seeds=(0, 1), magnitudes=(0.0, 1.0, 2.0), eval_users=32, shock_step=5, steps=512)


@dataclass(frozen=True)
class StressSettings:
    """Everything a stress test depends on (saved as settings.json next to the report)."""

    agents: tuple[str, ...] = DEFAULT_AGENTS
    families: tuple[str, ...] = tuple(FAMILIES)
    magnitudes: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    train_scenario: str = "stationary"
    scenario_overrides: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    algo: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per agent (sasrec's serve sasrec-retrain)
    steps: int = 250_000  # training budget of trainable agents (env steps)
    eval_users: int = 512  # evaluation users per regime
    reference: str = "oracle-lookahead"
    shock_step: int = 10  # episode step of the shock family's sudden shift
    shock_strength: float = 0.8  # share of the way to the new interests at magnitude 1
    recovery_magnitude: float = 1.0  # shock magnitude the recovery analysis uses
    recovery_level: float = 0.9  # recovered = back to this share of the pre-shock engagement
    retrain_every: int = 10  # for the *-retrain agents
    loads: tuple[str, ...] = ()  # run directories of trained agents to load instead of training
    device: str = "cpu"

    def __post_init__(self) -> None:
        o = "stress"
        for a in self.agents:
            parse_variant(a)  # an unknown agent, or -retrain on one that cannot: ValueError
        if not self.agents and not self.loads:
            raise ValueError("no agents to stress: give --agents or --load")
        if len(set(self.agents)) != len(self.agents):
            raise ValueError(f"an agent is listed twice in {list(self.agents)}")
        for f in self.families:
            if f not in FAMILIES:
                raise ValueError(f"unknown drift family '{f}'; valid families: {', '.join(FAMILIES)}")
        if not self.families:
            raise ValueError("give at least one drift family")
        if not self.magnitudes:
            raise ValueError("give at least one magnitude")
        for m in self.magnitudes:
            check_range(o, "magnitude", m, 0.0, 100.0)
        if not self.seeds:
            raise ValueError("give at least one seed")
        if self.train_scenario not in PRESETS:
            raise ValueError(f"unknown scenario '{self.train_scenario}'; valid scenarios: {', '.join(PRESETS)}")
        ref = get_agent(self.reference)
        if ref.trains:
            raise ValueError(f"the reference must be a policy that needs no training, got '{self.reference}'")
        check_int(o, "steps", self.steps, 1)
        check_int(o, "eval_users", self.eval_users, 2)
        check_int(o, "shock_step", self.shock_step, 1)
        check_range(o, "shock_strength", self.shock_strength, 0.0, 1.0)
        check_range(o, "recovery_level", self.recovery_level, 0.0, 1.0, lo_open=True)
        check_int(o, "retrain_every", self.retrain_every, 1)
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if "shock" in self.families and self.recovery_magnitude not in self.magnitudes:
            raise ValueError(
                f"--recovery-magnitude {self.recovery_magnitude} is not among the magnitudes {list(self.magnitudes)}"
            )
        unknown = set(self.algo) - {self.reference, *(base_agent(a) for a in self.agents)}
        if unknown:
            raise ValueError(
                f"algo settings for '{sorted(unknown)[0]}', which is not stressed "
                "(settings of NAME apply to NAME-retrain too)"
            )
        for agent, algo in self.algo.items():  # bad agent settings fail here too
            get_agent(agent).make_params(algo)
        self.train_config()  # bad scenario overrides fail here, before any work

    def replace(self, **changes: Any) -> StressSettings:
        return dataclasses.replace(self, **changes)

    def train_config(self) -> ScenarioConfig:
        return make_scenario(self.train_scenario, self.scenario_overrides)

    def regimes(self) -> list[tuple[str, float, ScenarioConfig]]:
        """(family, magnitude, scenario) of every regime evaluated: the training regime first
        ("none", 0), then each family and magnitude that differs from it."""
        train = self.train_config()
        out = [(NO_DRIFT, 0.0, train)]
        for family in self.families:
            for m in self.magnitudes:
                cfg = make_scenario(
                    self.train_scenario, merge_overrides(self.scenario_overrides, self.drift(family, m))
                )
                if not same_regime(cfg, train):  # equal: the no-drift row stands in
                    out.append((family, float(m), cfg))
        return out

    def drift(self, family: str, magnitude: float) -> dict[str, Any]:
        """Scenario overrides that set one drift family to `magnitude` (0: off)."""
        if magnitude == 0:
            return {family: {"enabled": False}}
        over: dict[str, Any] = {"enabled": True, "magnitude": float(magnitude)}
        if family == "shock":
            over["events"] = [dict(kind="sudden", step=self.shock_step, fraction=1.0, strength=self.shock_strength)]
        return {family: over}


def same_regime(a: ScenarioConfig, b: ScenarioConfig) -> bool:
    """The same world and env parameters (the preset's name aside)."""
    return (a.world, a.env) == (b.world, b.env)


def base_agent(name: str) -> str:
    """The registry name of an agent or of its -retrain variant."""
    return name[: -len(RETRAIN_SUFFIX)] if name.endswith(RETRAIN_SUFFIX) else name
