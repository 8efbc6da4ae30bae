"""Every agent runnable by name, and what each one is. An agent enters only through `register_agent`,
and every tool (run.py, compare.py, stress.py, validity.py, offline.py, sweep.py) finds it there:

  the package's own agents   registered at the bottom of this module, with the same call as any other;
  an installed package       an entry point of the group `driftrec.agents` (ENTRY_POINT_GROUP):
                             `my-rec = "my_package.rec:MyRec"`, registered under its entry point's name
                             when that name is first asked for;
  a module path              "package.module:attr" wherever an agent's name goes (`--agent my_rec:MyRec`):
                             agents/plugins.py makes its entry; it is named by its path;
  Python                     register_agent(AgentSpec(...)) from a module the process imports.

An entry says how to build the agent (a factory and the frozen dataclass of its `algo:` settings, as
callables or as "module:attr" paths imported when first needed: ray and stable-baselines3 are slow to
import) and what it is, so the experiment drivers never keep lists of names:

  trains    it has a training loop (a TrainableAgent: --steps, checkpoints, --resume);
  online    it learns while it serves (an agents.policy.Observer that learns from what it hears), so a
            stress test warms it up first and the offline study freezes it at what the logs taught it;
  retrains  it refits on the data its own serving produced: NAME-retrain (every k served steps,
            `retrain_every`) and, on lifetime scenarios, NAME-retrain-<D>d (every D days, `retrain_days`);
  uses_ray  it takes a Ray address and env-runner processes;
  uses_device  it trains torch models (--device applies);
  smoke     its `algo:` settings at the toy sizes of --smoke;
  model     its `model:` settings (EncoderConfig fields) unless the config file sets them;
  lifetime  its defaults on lifetime scenarios (LifetimeDefaults: `algo:` and `model:` settings, keeping the
            best snapshot).

What a built agent can do beyond act(obs) (hear each step, score candidates, report propensities, serve
from a date) is not declared here: its optional hooks are protocols (agents.policy), checked on the agent.
"""

from __future__ import annotations

import importlib.metadata
import inspect
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.modpath import import_attr
from simulator.params import apply_overrides

if TYPE_CHECKING:
    import pandas as pd

    from envs.config import ScenarioConfig

ENTRY_POINT_GROUP = "driftrec.agents"  # installed packages register agents under this entry-point group
RETRAIN_SUFFIX = "-retrain"  # NAME-retrain: a `retrains` agent refitting as it serves
# NAME-retrain-<D>d: refitting every D days of a calendar (lifetime scenarios), as SupervisedParams names it.
_DAYS_VARIANT = re.compile(rf"^(?P<base>.+){RETRAIN_SUFFIX}-(?P<days>[0-9]+(?:\.[0-9]+)?)d$")
FACTORY_ARGUMENTS = ("scenario", "params", "ctx")  # what a factory (or a Policy class) is called with, by name


@dataclass(frozen=True)
class RunContext:
    """What a factory needs besides the scenario and the agent's own settings.

    logs: logged data (agents.logs schema) the agent learns from instead of collecting its own (the
    offline study hands every agent the same logs); they are taken whole, not cut at a deployment day.
    logs_scenario: the world they were logged in, where it is not the agent's scenario (None: the same).
    """

    seed: int = 0
    device: str = "cpu"  # where a learner trains: "cpu" or "cuda" (resolved, never "auto")
    model: Mapping[str, Any] = field(default_factory=dict)  # EncoderConfig overrides (the `model:` section)
    run_dir: Path | None = None  # where an agent may write (logged data); None: nowhere
    ray_address: str | None = None  # an existing Ray cluster to join (uses_ray agents)
    logs: pd.DataFrame | None = None
    logs_scenario: ScenarioConfig | None = None


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


def _resolve(ref: Any, where: str) -> Any:
    """A callable or class given as itself or as a "module:attr" path (imported on first use)."""
    return import_attr(ref, where) if isinstance(ref, str) else ref


@dataclass(frozen=True)
class AgentSpec:
    """One runnable agent.

    factory: f(scenario, params, ctx) -> a Policy (agents.policy) or, when `trains`, a TrainableAgent
    (agents.base); called with whichever of scenario (a ScenarioConfig), params (its settings) and ctx
    (a RunContext) its signature names, so a Policy class is a factory too. params: the frozen dataclass
    of its settings, which the `algo:` section fills and validates (None: it takes none). Both are the
    objects themselves or "module:attr" paths, imported when first needed.
    """

    name: str
    description: str
    factory: str | Callable[..., Any]
    params: str | type | None = None
    trains: bool = False
    online: bool = False
    retrains: bool = False
    uses_ray: bool = False
    uses_device: bool = False
    smoke: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    lifetime: LifetimeDefaults = field(default_factory=LifetimeDefaults)

    def params_class(self) -> type | None:
        return None if self.params is None else _resolve(self.params, f"agent '{self.name}': params")

    def make_params(self, algo: Mapping[str, Any] | None = None) -> Any:
        """The validated settings: defaults with `algo` applied. An unknown key or a bad value is a
        ValueError naming `algo.<field>`; settings for an agent that takes none are an error too."""
        algo = dict(algo or {})
        cls = self.params_class()
        if cls is None:
            if algo:
                raise ValueError(f"{self.name} takes no algo settings, got {sorted(algo)}")
            return None
        try:
            defaults = cls()
        except Exception as err:  # a researcher's settings class: one line whatever it raises
            raise ValueError(f"agent '{self.name}': its default settings are refused: {err}") from None
        return apply_overrides(defaults, algo, "algo")

    def build(self, scenario: Any, algo: Mapping[str, Any] | None = None, **context: Any) -> Any:
        """Validate `algo`, then build the agent; `context` holds RunContext fields (seed, device, logs, ...).

        A factory's ValueError is a user error already said in one line and passes as it is; anything
        else it raises is one ValueError line naming the agent. What it returns must be what the entry
        says: a TrainableAgent when it trains, else a Policy."""
        params = self.make_params(algo)
        factory = _resolve(self.factory, f"agent '{self.name}': factory")
        arguments = dict(scenario=scenario, params=params, ctx=RunContext(**context))
        try:
            built = factory(**{k: arguments[k] for k in factory_arguments(factory, f"agent '{self.name}'")})
        except ValueError:
            raise
        except Exception as err:
            raise ValueError(f"agent '{self.name}': its factory failed: {type(err).__name__}: {err}") from err
        check_built(built, self)
        return built


def factory_arguments(factory: Callable[..., Any], where: str) -> tuple[str, ...]:
    """The FACTORY_ARGUMENTS `factory` takes (all of them when it takes **kwargs); a required argument
    driftrec cannot give is a ValueError naming it (`where` names the agent)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: the three, in order
        return FACTORY_ARGUMENTS
    taken = []
    for p in signature.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            return FACTORY_ARGUMENTS
        if p.name in FACTORY_ARGUMENTS and p.kind is not p.POSITIONAL_ONLY:
            taken.append(p.name)
        elif p.default is p.empty and p.kind not in (p.VAR_POSITIONAL,):
            raise ValueError(
                f"{where}: {getattr(factory, '__qualname__', factory)} needs '{p.name}', which driftrec "
                f"cannot give (it passes {', '.join(FACTORY_ARGUMENTS)} by name)"
            )
    return tuple(taken)


def is_trainable(obj: Any) -> bool:
    """Whether `obj` (an agent or its class) has a TrainableAgent's training loop and checkpoints."""
    return all(callable(getattr(obj, m, None)) for m in ("train_iteration", "policy", "save", "restore"))


def check_built(built: Any, spec: AgentSpec) -> None:
    """A ValueError in one line when a factory returned something else than its entry says."""
    from agents.policy import Policy

    kind = f"a value of type {type(built).__name__}"
    if spec.trains and not is_trainable(built):
        raise ValueError(
            f"agent '{spec.name}': its factory returned {kind}, not a TrainableAgent "
            "(train_iteration, policy, save, restore)"
        )
    if not spec.trains:
        if is_trainable(built):
            raise ValueError(
                f"agent '{spec.name}': its factory returned a TrainableAgent, but the agent is not declared to train "
                "(annotate the factory's return type with its class, or register an AgentSpec with trains=True)"
            )
        if not isinstance(built, Policy):
            raise ValueError(f"agent '{spec.name}': its factory returned {kind}, not a Policy (a name and act(obs))")


AGENTS: dict[str, AgentSpec] = {}  # the registry: name -> entry, in registration order
_BY_PATH: dict[str, AgentSpec] = {}  # agents loaded from module paths, by path


def check_name(name: Any) -> str:
    """`name` if it can name an agent: a non-empty string without spaces or ':' (a module path's mark)."""
    if not isinstance(name, str) or not name or ":" in name or any(c.isspace() for c in name):
        raise ValueError(f"an agent's name must be a non-empty string without spaces or ':', got {name!r}")
    return name


def register_agent(spec: AgentSpec) -> AgentSpec:
    """Register `spec` under its name: every tool then runs it by that name. A second agent of a registered
    name is refused; registering the same entry again changes nothing."""
    if not isinstance(spec, AgentSpec):
        raise ValueError(f"register_agent takes an AgentSpec, got {type(spec).__name__}")
    check_name(spec.name)
    known = AGENTS.get(spec.name)
    if known is not None and known != spec:
        raise ValueError(f"an agent named '{spec.name}' is registered already ({known.description})")
    AGENTS[spec.name] = spec
    return spec


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    """The `driftrec.agents` entry points of the installed packages, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def agent_names() -> tuple[str, ...]:
    """Every agent that can be asked for by name: the registered ones, then the installed packages'
    entry points not loaded yet."""
    return (*AGENTS, *(n for n in _entry_points() if n not in AGENTS))


def _from_entry_point(ep: importlib.metadata.EntryPoint) -> AgentSpec:
    from agents.plugins import spec_from_object

    where = f"agent '{ep.name}' (entry point {ep.value!r} of group {ENTRY_POINT_GROUP})"
    try:
        obj = ep.load()
    except Exception as err:  # an installed package that fails to import: one line, not a traceback
        raise ValueError(f"{where}: loading it failed: {type(err).__name__}: {err}") from None
    return register_agent(spec_from_object(obj, ep.name, where))


def get_agent(name: str) -> AgentSpec:
    """The entry of `name`: a registered agent, an installed package's entry point, or a module path
    "package.module:attr" (agents/plugins.py). An unknown name is a ValueError listing the valid ones,
    a module path that fails one naming what failed."""
    if isinstance(name, str) and name in AGENTS:
        return AGENTS[name]
    if isinstance(name, str) and ":" in name:
        if name not in _BY_PATH:
            from agents.plugins import spec_from_path

            _BY_PATH[name] = spec_from_path(name)
        return _BY_PATH[name]
    ep = _entry_points().get(name) if isinstance(name, str) else None
    if ep is not None:
        return _from_entry_point(ep)
    raise ValueError(
        f"unknown agent '{name}'; valid agents: {', '.join(agent_names())}, or a module path 'package.module:attr'"
    )


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


def _register_built_ins() -> None:
    """The package's own agents, through the same call a researcher's go through."""
    f = "agents.factory"
    smoke_logs = {"log_users": 16, "log_steps": 40}
    smoke_supervised = {**smoke_logs, "epochs": 1, "refit_batches": 4, "batch_size": 128}
    for spec in (
        AgentSpec(
            "ppo",
            "RLlib PPO (new API stack) with the shared encoder",
            f"{f}:build_ppo",
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
                **smoke_logs,
            },
            # The history is read once per trajectory ("stream", agents.stream) on every scenario: on
            # mixed it reaches the return of the window encoder (which `model: {history_mode: window}`
            # still gives) with 5x less arithmetic per env step (docs/benchmarks).
            model={"history_mode": "stream"},
            # Lifetimes: a warm start on fewer logs within the 15-minute budget (README). PPO on lifetimes
            # is unstable: the snapshot a run stops at decides its figure (docs/lifetime). So only its
            # critic learns for the first steps (the warm-started policy does not move on a fresh critic's
            # advantages), and a run ends with its best snapshot on validation users, evaluated 12 times (every
            # 4,096 steps: the return swings between evaluations, and 6 missed peaks on 3 seeds of 5, docs/lifetime;
            # the evaluations of the warm start during the warm-up are not re-run).
            # stress.py's temporal test trains the budget alone, as its report (docs/stress/lifetime) measured.
            # The history is read once per trajectory ("stream": a run in 6 min 9 s against the window
            # encoder's 11 min 45 s) and the return discounted over calendar days, not steps: a visit next
            # week weighs 0.9^7 whatever the steps between (docs/lifetime: 5,250 lifetime minutes at 5
            # seeds against 3,364 discounted per step, and 2,825 with the window encoder).
            lifetime=LifetimeDefaults(
                algo={"pretrain_epochs": 1, "log_users": 64, "gamma_per_day": 0.9},
                keep_best_evaluations=12,
                keep_best_algo={"critic_warmup_steps": 16_384},
            ),
        ),
        AgentSpec(
            "sb3-ppo",
            "stable-baselines3 PPO with the shared encoder",
            f"{f}:build_sb3_ppo",
            "agents.sb3_agent:SB3PPOParams",
            trains=True,
            uses_device=True,
            smoke={"num_envs": 16, "n_steps": 16, "batch_size": 128, "n_epochs": 1, **smoke_logs},
        ),
        AgentSpec("random", "uniformly random candidates", f"{f}:build_random"),
        AgentSpec(
            "popularity",
            "most-watched items in logged data",
            f"{f}:build_popularity",
            "agents.logs:LogParams",
            smoke=smoke_logs,
        ),
        AgentSpec(
            "item-score",
            "user-blind: a linear score over item features, tuned on users of a separate seed",
            f"{f}:build_item_score",
            "agents.item_score:ItemScoreParams",
            smoke={"candidates": 2, "refinements": 1, "tune_users": 16},
        ),
        AgentSpec(
            "bandit",
            "LinUCB contextual bandit, learning online",
            f"{f}:build_bandit",
            "agents.baselines:BanditParams",
            online=True,
        ),
        AgentSpec(
            "sasrec",
            "supervised next-engagement Transformer (the shared encoder) trained on logs",
            f"{f}:build_sasrec",
            "agents.supervised:SupervisedParams",
            retrains=True,
            uses_device=True,
            smoke=smoke_supervised,
        ),
        AgentSpec(
            "gru4rec",
            "supervised GRU next-engagement model on logs",
            f"{f}:build_gru4rec",
            "agents.supervised:SupervisedParams",
            retrains=True,
            uses_device=True,
            smoke=smoke_supervised,
        ),
        AgentSpec(
            "oracle-myopic", "reads the true state; maximises immediate expected watch time", f"{f}:build_myopic"
        ),
        AgentSpec(
            "oracle-session",
            "reads the true state; maximises watch time per minute of session budget",
            f"{f}:build_session",
        ),
        AgentSpec(
            "oracle-stale",
            "oracle-session planning with the user's tastes as at the episode's start (drift-blind)",
            f"{f}:build_stale",
        ),
        AgentSpec(
            "oracle-community",
            "oracle-session planning with the tastes of the user's community's average member (own tastes unknown)",
            f"{f}:build_community",
        ),
        AgentSpec(
            "oracle-lifetime",
            "reads the true state; watch time per budget minute, weighted by how the step feels (the next visit)",
            f"{f}:build_lifetime_oracle",
            "agents.oracles:LifetimeOracleParams",
        ),
        AgentSpec(
            "oracle-lookahead",
            "plans with copies of the true simulator (rollouts over oracle-session)",
            f"{f}:build_lookahead",
            "agents.oracles:LookaheadParams",
            smoke={"top": 2, "rollouts": 2, "horizon": 5},
        ),
    ):
        register_agent(spec)


_register_built_ins()
