"""What a drift stress test runs: its settings, the drift families and the regimes they make.

Two modes, chosen by the training scenario. Step mode (session presets): agents train on the
training regime and are evaluated on sessions; the shock family's event is at an episode step.
Temporal mode (presets with a calendar, `lifetime`): agents are trained on days [0, train_days)
and serve lives of serve_days days (supervised agents on the logs of those days, served from
train_days on; simulator-trained agents on lifetimes of train_days days; the rest just serve);
the shock family adds one sudden shift dated at shock_day to the training regime's own events,
and NAME-retrain agents become one NAME-retrain-<D>d variant per cadence of retrain_days.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agents.registry import RETRAIN_SUFFIX, days_variant, get_agent, parse_variant, retrain_days, variant_base
from envs.config import ScenarioConfig, make_scenario, scenario_label
from experiments.core.costs import check_evaluation_memory
from experiments.core.devices import DEVICES
from experiments.core.records import load_run
from simulator.families import family_names
from simulator.params import check_int, check_range, check_seed, merge_overrides

NO_DRIFT = "none"  # the family name of the training regime itself

FAMILIES = family_names()  # the default grid: the registered families (a family's name is its config section)
DEFAULT_AGENTS = ("ppo", "sasrec", "sasrec-retrain", "bandit")
# --smoke: the grid at toy sizes (with runs.SMOKE_SCENARIO/SMOKE_MODEL and each agent's smoke settings).
STRESS_SMOKE = dict(seeds=(0, 1), magnitudes=(0.0, 1.0, 2.0), eval_users=32, shock_step=5, steps=512)
# --smoke on a calendar: tiny lives of 6 days, trained on days [0, 2), shocked on day 4 (with STRESS_SMOKE's sizes).
STRESS_SMOKE_LIFETIME = dict(eval_users=16, train_days=2.0, serve_days=6.0, shock_day=4.0, retrain_days=(2.0, 1.0))
SMOKE_LIFETIME_SCENARIO = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8}}
# Temporal mode's defaults (None in the settings until resolved on a calendar).
TEMPORAL_DEFAULTS = dict(train_days=30.0, serve_days=90.0, retrain_days=(7.0, 1.0), reference="oracle-lifetime")
SESSION_REFERENCE = "oracle-lookahead"


@dataclass(frozen=True)
class StressSettings:
    """Everything a stress test depends on (saved as settings.json next to the report).

    train_days, serve_days, shock_day and retrain_days are the temporal mode's (a training
    scenario with a calendar): None there means its default (30, 90, a quarter of the way into
    the serving window: 45, and (7, 1)); set on a session scenario, an error. reference None:
    oracle-lifetime in temporal mode, oracle-lookahead in step mode.
    """

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
    reference: str | None = None
    shock_step: int = 10  # episode step of the shock family's sudden shift (step mode)
    shock_strength: float = 0.8  # share of the way to the new interests at magnitude 1
    recovery_magnitude: float = 1.0  # shock magnitude the recovery analysis uses
    recovery_level: float = 0.9  # recovered = back to this share of the pre-shock engagement
    retrain_every: int = 10  # for the *-retrain agents (step mode)
    loads: tuple[str, ...] = ()  # run directories of trained agents to load instead of training
    device: str = "cpu"
    train_days: float | None = None  # temporal mode: trained on days [0, train_days)
    serve_days: float | None = None  # temporal mode: the evaluation lives' horizon
    shock_day: float | None = None  # temporal mode: day of the shock family's sudden shift
    retrain_days: tuple[float, ...] | None = None  # temporal mode: cadences of the NAME-retrain variants

    def __post_init__(self) -> None:
        o = "stress"
        preset = make_scenario(self.train_scenario, self.scenario_overrides)  # unknown or bad overrides fail here
        self._resolve_mode(preset)
        for a in self.agents:
            parse_variant(a)  # an unknown agent, or -retrain on one that cannot: ValueError
            if retrain_days(a) is not None and not self.temporal:
                raise ValueError(
                    f"'{a}' refits every {retrain_days(a):g} days: for training scenarios with a calendar "
                    f"('{self.train_scenario}' has none; {variant_base(a)}{RETRAIN_SUFFIX} refits every "
                    "--retrain-every served steps)"
                )
        if not self.agents and not self.loads:
            raise ValueError("no agents to stress: give --agents or --load")
        if len(set(self.agents)) != len(self.agents):
            raise ValueError(f"an agent is listed twice in {list(self.agents)}")
        for f in self.families:  # the training scenario's: a family it names under families: counts
            if f not in preset.world.family_names:
                raise ValueError(f"unknown drift family '{f}'; valid families: {', '.join(preset.world.family_names)}")
        if not self.families:
            raise ValueError("give at least one drift family")
        if not self.magnitudes:
            raise ValueError("give at least one magnitude")
        for m in self.magnitudes:
            check_range(o, "magnitude", m, 0.0, 100.0)
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"--seeds must be distinct seeds, at least one, got {list(self.seeds)}")
        for seed in self.seeds:  # before any directory or job: numpy's own error names no flag
            check_seed("--seeds", seed)
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
                "(settings of NAME apply to its -retrain variants too)"
            )
        for agent, algo in self.algo.items():  # bad agent settings fail here too
            if self.temporal and get_agent(agent).retrains:
                for key, flag in (
                    ("train_days", "--train-days"),
                    ("retrain_every_days", "the NAME-retrain-<D>d variants"),
                ):
                    if key in algo:
                        raise ValueError(f"algo.{agent}.{key}: the stress test sets it (use {flag})")
            get_agent(agent).make_params(self.agent_algo(agent))
        self.train_config()  # bad scenario overrides fail here, before any work
        # An evaluation of every regime holds eval_users users side by side, a network's forward pass with them.
        check_evaluation_memory("--eval-users", self.eval_users, self.serve_config(), dict(self.model))
        for run_dir in self.loads:  # unfinished (half-trained), truncated or inconsistent: refused, named
            load_run(run_dir, flag="--load")

    def _resolve_mode(self, preset: ScenarioConfig) -> None:
        """Temporal mode on a calendar: check and fill in the day settings and expand NAME-retrain
        into its day cadences; step mode: refuse day settings. The reference defaults per mode."""
        o, days = "stress", ("train_days", "serve_days", "shock_day", "retrain_days")
        set_ = object.__setattr__  # frozen: resolved once, here
        if not preset.world.lifetime.enabled:
            for name in days:
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{o}.{name} is for training scenarios with a calendar (lifetime presets): "
                        f"'{self.train_scenario}' has none (its shock is at --shock-step)"
                    )
            set_(self, "reference", self.reference or SESSION_REFERENCE)
            return
        for name, value in TEMPORAL_DEFAULTS.items():
            if getattr(self, name) is None:
                set_(self, name, value)
        check_range(o, "train_days", self.train_days, 0.0, 36_500.0, lo_open=True)
        check_range(o, "serve_days", self.serve_days, 0.0, 36_500.0, lo_open=True)
        if self.serve_days <= self.train_days:
            raise ValueError(
                f"{o}.serve_days must exceed train_days (lives served past the training days), "
                f"got serve_days {self.serve_days:g} <= train_days {self.train_days:g}"
            )
        if self.shock_day is None:
            set_(self, "shock_day", self.train_days + 0.25 * (self.serve_days - self.train_days))
        check_range(o, "shock_day", self.shock_day, 0.0, 36_500.0)
        if not self.train_days < self.shock_day < self.serve_days:
            raise ValueError(
                f"{o}.shock_day must lie in the serving window ({self.train_days:g}, {self.serve_days:g}) "
                f"(train_days, serve_days), got {self.shock_day:g}"
            )
        set_(self, "retrain_days", tuple(float(d) for d in self.retrain_days))
        for d in self.retrain_days:
            check_range(o, "retrain_days", d, 0.0, 36_500.0, lo_open=True)
        if len(set(self.retrain_days)) != len(self.retrain_days):
            raise ValueError(f"a cadence is listed twice in retrain_days {list(self.retrain_days)}")
        agents = []  # NAME-retrain: one variant per cadence
        for a in self.agents:
            cadence = a.endswith(RETRAIN_SUFFIX) and a != base_agent(a)  # not NAME-retrain-<D>d
            agents += [days_variant(base_agent(a), d) for d in self.retrain_days] if cadence else [a]
        set_(self, "agents", tuple(agents))
        set_(self, "reference", self.reference or TEMPORAL_DEFAULTS["reference"])

    @property
    def train_label(self) -> str:
        """What the training regime's runs are filed under: a preset's name or a scenario file's label."""
        return scenario_label(self.train_scenario)

    @property
    def temporal(self) -> bool:
        """Temporal mode: the training scenario has a calendar (train_days is resolved)."""
        return self.train_days is not None

    def replace(self, **changes: Any) -> StressSettings:
        return dataclasses.replace(self, **changes)

    def agent_algo(self, agent: str) -> dict[str, Any]:
        """The `algo:` settings `agent` (a registry name) is built with: in temporal mode a
        supervised agent is also trained on the logs of days [0, train_days)."""
        algo = dict(self.algo.get(agent, {}))
        if self.temporal and get_agent(agent).retrains:
            algo["train_days"] = self.train_days
        return algo

    def _overrides(self, horizon: float | None) -> dict[str, Any]:
        """The scenario overrides, with lives of `horizon` days (None: as given)."""
        extra = None if horizon is None else {"lifetime": {"horizon_days": float(horizon)}}
        return merge_overrides(self.scenario_overrides, extra)

    def train_overrides(self) -> dict[str, Any]:
        """Overrides of the training regime: temporal mode's world of days [0, train_days)."""
        return self._overrides(self.train_days)

    def train_config(self) -> ScenarioConfig:
        """The training regime (temporal mode: lives of train_days days)."""
        return make_scenario(self.train_scenario, self.train_overrides())

    def serve_config(self) -> ScenarioConfig:
        """The regime without added drift that agents serve (temporal mode: lives of serve_days
        days, the supervised agents' logs of [0, train_days) included); the training regime in step mode."""
        return make_scenario(self.train_scenario, self._overrides(self.serve_days))

    def regimes(self) -> list[tuple[str, float, ScenarioConfig]]:
        """(family, magnitude, scenario) of every regime evaluated: the regime served without
        added drift first ("none", 0), then each family and magnitude that differs from it."""
        calm = self.serve_config()
        out = [(NO_DRIFT, 0.0, calm)]
        for family in self.families:
            for m in self.magnitudes:
                cfg = self._drifted(family, m)
                if not same_regime(cfg, calm):  # equal: the no-drift row stands in
                    out.append((family, float(m), cfg))
        return out

    def stand_ins(self) -> list[tuple[str, float]]:
        """(family, magnitude) of the grid that equal the regime without added drift: those
        `regimes` leaves out (its no-drift evaluation stands in)."""
        evaluated = {(family, m) for family, m, _ in self.regimes()}
        return [(f, float(m)) for f in self.families for m in self.magnitudes if (f, float(m)) not in evaluated]

    def _drifted(self, family: str, magnitude: float) -> ScenarioConfig:
        return make_scenario(
            self.train_scenario, merge_overrides(self._overrides(self.serve_days), self.drift(family, magnitude))
        )

    def drift(self, family: str, magnitude: float) -> dict[str, Any]:
        """Scenario overrides that set one drift family to `magnitude` (0: off). Temporal mode's
        shock family instead adds one sudden shift on shock_day to the regime's own events
        (moving every user min(1, shock_strength x magnitude) of the way; 0: none added)."""
        if family == "shock" and self.temporal:
            return self._dated_shock(magnitude)
        if magnitude == 0:
            return {family: {"enabled": False}}
        over: dict[str, Any] = {"enabled": True, "magnitude": float(magnitude)}
        if family == "shock":
            over["events"] = [dict(kind="sudden", step=self.shock_step, fraction=1.0, strength=self.shock_strength)]
        return {family: over}

    def _dated_shock(self, magnitude: float) -> dict[str, Any]:
        if magnitude == 0:
            return {}
        own = self.serve_config().world.shock
        scale = own.scale or 1.0  # the family's magnitude scales every event: the added one's strength undoes it
        events = [dataclasses.asdict(e) for e in own.active_events()]
        strength = min(1.0, self.shock_strength * magnitude / scale)
        events.append(dict(kind="sudden", day=float(self.shock_day), fraction=1.0, strength=strength))
        return {"shock": {"enabled": True, "magnitude": scale, "events": events}}


def same_regime(a: ScenarioConfig, b: ScenarioConfig) -> bool:
    """The same world and env parameters (the preset's name aside)."""
    return (a.world, a.env) == (b.world, b.env)


def base_agent(name: str) -> str:
    """The registry name of an agent or of its refitting variants (NAME-retrain, NAME-retrain-<D>d)."""
    return variant_base(name)
