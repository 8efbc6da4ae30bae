"""Every agent runnable by name, and what each one is: the one place a new agent is registered.

An entry says how to build the agent (a factory and the frozen dataclass of its `algo:`
settings, both imported lazily: ray and stable-baselines3 are slow to import) and what it
is, so the experiment drivers never keep lists of names:

  trains    it has a training loop (a TrainableAgent: --steps, checkpoints, --resume);
  online    it learns while it serves (observe()), so a stress test warms it up first;
  retrains  it refits on the data its own serving produced: NAME-retrain (every k served steps,
            `retrain_every`) and, on lifetime scenarios, NAME-retrain-<D>d (every D days, `retrain_every_days`);
  uses_ray  it takes a Ray address and env-runner processes;
  uses_device  it trains torch models (--device applies);
  smoke     its `algo:` settings at the toy sizes of --smoke;
  model     its `model:` settings (EncoderConfig fields) unless the config file sets them;
  lifetime  its defaults on lifetime scenarios (LifetimeDefaults: `algo:` and `model:` settings, keeping the
            best snapshot).

Adding an agent: write its module (a Policy, or a TrainableAgent, with a Params dataclass
validated in `__post_init__`), add a factory to agents/factory.py, and one entry below.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulator.params import apply_overrides

RETRAIN_SUFFIX = "-retrain"  # NAME-retrain: a `retrains` agent refitting as it serves
# NAME-retrain-<D>d: refitting every D days of a calendar (lifetime scenarios), as SupervisedParams names it.
_DAYS_VARIANT = re.compile(rf"^(?P<base>.+){RETRAIN_SUFFIX}-(?P<days>[0-9]+(?:\.[0-9]+)?)d$")


@dataclass(frozen=True)
class RunContext:
    """What a factory needs besides the scenario and the agent's own settings."""

    seed: int = 0
    device: str = "cpu"  # where a learner trains: "cpu" or "cuda" (resolved, never "auto")
    model: Mapping[str, Any] = field(default_factory=dict)  # EncoderConfig overrides (the `model:` section)
    run_dir: Path | None = None  # where an agent may write (logged data); None: nowhere
    ray_address: str | None = None  # an existing Ray cluster to join (uses_ray agents)


@dataclass(frozen=True)
class LifetimeDefaults:
    """An agent's own defaults on lifetime scenarios (a calendar), on top of the run sizes every agent
    gets there (experiments.core.settings.LIFETIME_RUN_DEFAULTS); flags, the config file and the --smoke
    sizes override them.

    algo: its `algo:` settings there (run.py, sweep.py and stress.py's temporal mode).
    keep_best_evaluations: > 0: a run.py or sweep.py run keeps its best snapshot on validation users by
        default (--no-keep-best: the last), chosen among this many evaluations over the steps (not under
        --smoke: toy runs are shorter than a warm-up); keep_best_algo: the `algo:` settings that go with it.
    """

    algo: Mapping[str, Any] = field(default_factory=dict)
    keep_best_evaluations: int = 0
    keep_best_algo: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)


def _load(path: str) -> Any:
    module, attr = path.split(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class AgentSpec:
    """One runnable agent. `factory` and `params` are "module:attribute" paths."""

    name: str
    description: str
    factory: str  # f(scenario, params, RunContext) -> Policy or TrainableAgent
    params: str | None = None  # its settings dataclass; None: it takes no settings
    trains: bool = False
    online: bool = False
    retrains: bool = False
    uses_ray: bool = False
    uses_device: bool = False
    smoke: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    lifetime: LifetimeDefaults = field(default_factory=LifetimeDefaults)

    def make_params(self, algo: Mapping[str, Any] | None = None) -> Any:
        """The validated settings: defaults with `algo` applied. An unknown key or a bad value is a
        ValueError naming `algo.<field>`; settings for an agent that takes none are an error too."""
        algo = dict(algo or {})
        if self.params is None:
            if algo:
                raise ValueError(f"{self.name} takes no algo settings, got {sorted(algo)}")
            return None
        return apply_overrides(_load(self.params)(), algo, "algo")

    def build(self, scenario: Any, algo: Mapping[str, Any] | None = None, **context: Any) -> Any:
        """Validate `algo`, then build the agent; `context` holds RunContext fields (seed, device, ...)."""
        params = self.make_params(algo)
        return _load(self.factory)(scenario, params, RunContext(**context))


_F = "agents.factory"
_SMOKE_LOGS = {"log_users": 16, "log_steps": 40}
_SMOKE_SUPERVISED = {**_SMOKE_LOGS, "epochs": 1, "refit_batches": 4, "batch_size": 128}

AGENTS: dict[str, AgentSpec] = {
    spec.name: spec
    for spec in (
        AgentSpec(
            "ppo",
            "RLlib PPO (new API stack) with the shared encoder",
            f"{_F}:build_ppo",
            "agents.rllib_agent:PPOParams",
            trains=True,
            uses_ray=True,
            uses_device=True,
            smoke={
                "num_envs_per_env_runner": 16,
                "rollout_fragment_length": 16,
                "train_batch_size": 256,
                "minibatch_size": 128,
                "num_epochs": 1,
                "pretrain_epochs": 1,
                **_SMOKE_LOGS,
            },
            # Lifetimes: a warm start on fewer logs within the 15-minute budget (README). PPO on lifetimes
            # is unstable: the snapshot a run stops at decides its figure (docs/lifetime). So only its
            # critic learns for the first steps (the warm-started policy does not move on a fresh critic's
            # advantages), and a run ends with its best snapshot on validation users, evaluated 6 times.
            # stress.py's temporal test trains the budget alone, as its report (docs/stress/lifetime) measured.
            lifetime=LifetimeDefaults(
                algo={"pretrain_epochs": 1, "log_users": 64},
                keep_best_evaluations=6,
                keep_best_algo={"critic_warmup_steps": 16_384},
            ),
        ),
        AgentSpec(
            "sb3-ppo",
            "stable-baselines3 PPO with the shared encoder",
            f"{_F}:build_sb3_ppo",
            "agents.sb3_agent:SB3PPOParams",
            trains=True,
            uses_device=True,
            smoke={"num_envs": 16, "n_steps": 16, "batch_size": 128, "n_epochs": 1, **_SMOKE_LOGS},
        ),
        AgentSpec("random", "uniformly random candidates", f"{_F}:build_random"),
        AgentSpec(
            "popularity",
            "most-watched items in logged data",
            f"{_F}:build_popularity",
            "agents.logs:LogParams",
            smoke=_SMOKE_LOGS,
        ),
        AgentSpec(
            "item-score",
            "user-blind: a linear score over item features, tuned on users of a separate seed",
            f"{_F}:build_item_score",
            "agents.item_score:ItemScoreParams",
            smoke={"candidates": 2, "refinements": 1, "tune_users": 16},
        ),
        AgentSpec(
            "bandit",
            "LinUCB contextual bandit, learning online",
            f"{_F}:build_bandit",
            "agents.baselines:BanditParams",
            online=True,
        ),
        AgentSpec(
            "sasrec",
            "supervised next-engagement Transformer (the shared encoder) trained on logs",
            f"{_F}:build_sasrec",
            "agents.supervised:SupervisedParams",
            retrains=True,
            uses_device=True,
            smoke=_SMOKE_SUPERVISED,
        ),
        AgentSpec(
            "gru4rec",
            "supervised GRU next-engagement model on logs",
            f"{_F}:build_gru4rec",
            "agents.supervised:SupervisedParams",
            retrains=True,
            uses_device=True,
            smoke=_SMOKE_SUPERVISED,
        ),
        AgentSpec(
            "oracle-myopic", "reads the true state; maximises immediate expected watch time", f"{_F}:build_myopic"
        ),
        AgentSpec(
            "oracle-session",
            "reads the true state; maximises watch time per minute of session budget",
            f"{_F}:build_session",
        ),
        AgentSpec(
            "oracle-stale",
            "oracle-session planning with the user's tastes as at the episode's start (drift-blind)",
            f"{_F}:build_stale",
        ),
        AgentSpec(
            "oracle-community",
            "oracle-session planning with the tastes of the user's community's average member (own tastes unknown)",
            f"{_F}:build_community",
        ),
        AgentSpec(
            "oracle-lifetime",
            "reads the true state; watch time per budget minute, weighted by how the step feels (the next visit)",
            f"{_F}:build_lifetime_oracle",
            "agents.oracles:LifetimeOracleParams",
        ),
        AgentSpec(
            "oracle-lookahead",
            "plans with copies of the true simulator (rollouts over oracle-session)",
            f"{_F}:build_lookahead",
            "agents.oracles:LookaheadParams",
            smoke={"top": 2, "rollouts": 2, "horizon": 5},
        ),
    )
}


def get_agent(name: str) -> AgentSpec:
    """The entry of `name`; an unknown name is a ValueError listing the valid ones."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent '{name}'; valid agents: {', '.join(AGENTS)}")
    return AGENTS[name]


def parse_variant(name: str) -> tuple[AgentSpec, bool]:
    """(entry, retrains) of a name that may carry a refitting suffix: NAME-retrain (every k served
    steps, "sasrec-retrain") or NAME-retrain-<D>d (every D days of a calendar, "sasrec-retrain-7d")."""
    if name in AGENTS:
        return AGENTS[name], False
    base = variant_base(name)
    if base == name:
        return get_agent(name), False  # unknown: the error lists the valid names
    spec = get_agent(base)
    if not spec.retrains:
        retrainable = [a for a, s in AGENTS.items() if s.retrains]
        raise ValueError(f"'{name}': only {' and '.join(retrainable)} retrain ({RETRAIN_SUFFIX})")
    if retrain_days(name) == 0:
        raise ValueError(f"'{name}': a cadence in days must be > 0 (NAME{RETRAIN_SUFFIX}-7d refits every 7 days)")
    return spec, True


def variant_base(name: str) -> str:
    """The registry name under a refitting suffix ("sasrec-retrain-7d" -> "sasrec"); other names unchanged."""
    if name in AGENTS:
        return name
    match = _DAYS_VARIANT.match(name)
    if match:
        return match["base"]
    return name[: -len(RETRAIN_SUFFIX)] if name.endswith(RETRAIN_SUFFIX) else name


def retrain_days(name: str) -> float | None:
    """D of a NAME-retrain-<D>d variant (its refit cadence in days); None for any other name."""
    match = None if name in AGENTS else _DAYS_VARIANT.match(name)
    return float(match["days"]) if match else None


def days_variant(name: str, days: float) -> str:
    """The name of `name` refitting every `days` days: NAME-retrain-<D>d (SupervisedParams.name_suffix)."""
    return f"{name}{RETRAIN_SUFFIX}-{days:g}d"
