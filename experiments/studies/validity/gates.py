"""The validity report's measurements and gates: is the simulator posing a recommendation problem?

A simulator is worth studying only if who the user is, what they did and how their tastes moved
decide what pays. Every measurement puts policies on the same users (common random numbers),
three seeds of 1,024 users by default, and every gate is a pass/fail with its figures:

- personalisation: the best user-blind policy (the better of highest rating, most popular,
  the feature model, logged popularity and the tuned linear item score) earns at most 70% of
  the lookahead oracle, on every preset;
- history: a history-reading policy limited to `history_len: 1` earns at most 85% of the same
  policy with the full history (PPO and sasrec, on mixed and cognitive);
- drift: the stale-state oracle (tastes as at the episode's start) earns at most 90% of the
  true-state oracle on shock and mixed at magnitude 1, less at magnitude 2; on every drift
  preset its shortfall grows with the magnitude; on stationary the two tie;
- soundness: no policy beats the lookahead oracle beyond its interval;
- long-term value: the lookahead oracle earns at least 15% more than the myopic one.

On lifetime presets (an episode is a user's life of sessions over 60 days) the long-horizon
reference is `oracle-lifetime` (it values the next visit; rollouts over lives of thousands of
steps are out of reach), long-term value must reach +25% in lifetime watch time, and the
stale-state oracle (tastes as at the first visit) must fall further short at magnitude 1 than
within a `mixed` session: drift across days bites harder.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.item_score import POPULARITY, QUALITY, FeatureModelPolicy, ItemScorePolicy
from agents.oracles import (
    LifetimeOracle,
    LifetimeOracleParams,
    LookaheadOracle,
    LookaheadParams,
    MyopicOracle,
    SessionOracle,
    StaleStateOracle,
)
from agents.policy import RandomPolicy
from agents.registry import get_agent
from envs.config import PRESETS, ScenarioConfig, has_calendar, make_scenario, scenario_label
from experiments.core.costs import check_evaluation_memory
from experiments.core.harness import EVAL_SEED, evaluate
from experiments.core.records import load_run
from experiments.core.restore import restore_policy
from experiments.core.settings import RunSettings, scenario_differences
from experiments.core.stats import mean_interval
from experiments.core.tables import markdown_table
from experiments.core.training import run_one
from simulator.params import check_int, merge_overrides


def drift_families(preset: str) -> tuple[str, ...]:
    """The drift families a preset turns on (their names, also their config sections), in hook order."""
    world = make_scenario(preset).world
    return tuple(family.name for family, params in world.families if params.enabled)


USER_BLIND = ("max-rating", "max-popularity", "feature-model", "popularity", "item-score")
# Floors and ceilings of the gates (the numbers).
BLIND_MAX, HISTORY_MAX, STALE_MAX, LONG_TERM_MIN = 0.70, 0.85, 0.90, 1.15
LIFETIME_LONG_TERM_MIN = 1.25  # lifetime worlds: the next visit must pay more


def reference(preset: str) -> str:
    """The long-horizon reference of a preset: the lookahead oracle, or in lifetime worlds (where
    rollouts over lives of thousands of steps are out of reach) the oracle that values the next visit."""
    return "oracle-lifetime" if has_calendar(preset) else "oracle-lookahead"


@dataclass(frozen=True)
class ValiditySettings:
    """What the report measures. seeds: evaluation users of seed EVAL_SEED + s (and training seeds
    of the history ablation); magnitudes: of each drift preset's families (0 is always added)."""

    presets: tuple[str, ...] = tuple(PRESETS)
    seeds: tuple[int, ...] = (0, 1, 2)
    users: int = 1024
    magnitudes: tuple[float, ...] = (1.0, 2.0)
    history_agents: tuple[str, ...] = ("ppo", "sasrec")
    history_presets: tuple[str, ...] = ("mixed", "cognitive")
    history_seeds: tuple[int, ...] = (0,)  # training seeds of the history ablation
    history_runs: tuple[str, ...] = ()  # trained run directories to load instead of training
    steps: int = 250_000  # PPO's training budget in the history ablation
    scenario_overrides: Mapping[str, Any] = field(default_factory=dict)  # on every preset (smoke sizes)
    model: Mapping[str, Any] = field(default_factory=dict)
    algo: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per agent, incl. oracle-lookahead

    def __post_init__(self) -> None:
        for p in (*self.presets, *self.history_presets):
            scenario_label(p)  # an unknown preset (or a scenario file that cannot be read) fails here
        for a in self.history_agents:
            get_agent(a)
        for name in ("seeds", "history_seeds"):
            values = getattr(self, name)
            if not values or len(set(values)) != len(values):
                raise ValueError(f"validity.{name} must be distinct seeds, got {list(values)}")
            for s in values:
                check_int("validity", name, s, 0)
        check_int("validity", "users", self.users, 2)
        check_int("validity", "steps", self.steps, 1)
        if any(not m > 0 for m in self.magnitudes) or list(self.magnitudes) != sorted(set(self.magnitudes)):
            raise ValueError(f"validity.magnitudes must be increasing and > 0, got {list(self.magnitudes)}")
        for agent, algo in self.algo.items():
            get_agent(agent).make_params(algo)
        self.scenario("stationary")  # bad overrides fail here, before any work
        for preset in self.presets:  # each evaluation holds `users` users side by side (a network's too)
            check_evaluation_memory("--users", self.users, self.scenario(preset), dict(self.model))
        for run_dir in self.history_runs:  # unfinished (half-trained), truncated or inconsistent: refused
            saved = load_run(run_dir, flag="--history-runs").settings
            if saved.scenario in PRESETS:  # a run of other dynamics would be measured as if of these (a file: by hash)
                trained = saved.scenario_config()
                measured = self.scenario(saved.scenario, {"env": {"history_len": trained.env.history_len}})
                differ = scenario_differences(trained, measured)
                if differ:
                    raise ValueError(
                        f"--history-runs {run_dir} was trained on another '{saved.scenario}' than this report measures "
                        f"(differs in: {', '.join(differ)}); retrain it, or leave it out to train here"
                    )

    def scenario(self, preset: str, extra: Mapping[str, Any] | None = None) -> ScenarioConfig:
        return make_scenario(preset, merge_overrides(self.scenario_overrides, extra))

    def replace(self, **changes: Any) -> ValiditySettings:
        return dataclasses.replace(self, **changes)


def user_blind_policies(settings: ValiditySettings, cfg: ScenarioConfig, seed: int) -> list[Any]:
    t = cfg.world.catalog.n_topics
    popularity = get_agent("popularity").build(cfg, settings.algo.get("popularity", {}), seed=seed)
    tuned = get_agent("item-score").build(cfg, settings.algo.get("item-score", {}), seed=seed)
    return [
        ItemScorePolicy.max_feature(t, QUALITY, "max-rating"),
        ItemScorePolicy.max_feature(t, POPULARITY, "max-popularity"),
        FeatureModelPolicy(),
        popularity,
        tuned,
    ]


def measure_policies(settings: ValiditySettings) -> pd.DataFrame:
    """One row per preset, seed and policy: random, the user-blind policies, the oracles."""
    rows = []
    lookahead = LookaheadParams(**settings.algo.get("oracle-lookahead", {}))
    lifetime = LifetimeOracleParams(**settings.algo.get("oracle-lifetime", {}))
    for preset in settings.presets:
        cfg = settings.scenario(preset)
        for seed in settings.seeds:
            policies = [
                RandomPolicy(seed),
                *user_blind_policies(settings, cfg, seed),
                MyopicOracle(),
                SessionOracle(),
                StaleStateOracle(),
                LifetimeOracle(lifetime) if has_calendar(preset) else LookaheadOracle(lookahead, seed=seed),
            ]
            for policy in policies:
                m = evaluate(policy, cfg, settings.users, EVAL_SEED + seed).metrics
                rows.append(dict(preset=preset, seed=seed, policy=policy.name, **m))
    return pd.DataFrame(rows)


def measure_drift(settings: ValiditySettings) -> pd.DataFrame:
    """Stale-state against true-state (session) oracle, per drift preset, magnitude and seed."""
    rows = []
    for preset in settings.presets:
        sections = drift_families(preset)
        for magnitude in (0.0, *settings.magnitudes) if sections else ():
            drift = {s: ({"magnitude": magnitude} if magnitude > 0 else {"enabled": False}) for s in sections}
            cfg = settings.scenario(preset, drift)
            for seed in settings.seeds:
                true = evaluate(SessionOracle(), cfg, settings.users, EVAL_SEED + seed).metrics["return_mean"]
                stale = evaluate(StaleStateOracle(), cfg, settings.users, EVAL_SEED + seed).metrics["return_mean"]
                rows.append(
                    dict(
                        preset=preset,
                        magnitude=magnitude,
                        seed=seed,
                        true_state=true,
                        stale_state=stale,
                        ratio=stale / true,
                    )
                )
    return pd.DataFrame(rows)


def _history_policy(settings: ValiditySettings, agent: str, preset: str, history_len: int, seed: int, out: Path) -> Any:
    """The agent trained (or fitted on logs) with `history_len`, or loaded from --history-runs."""
    extra = {"env": {"history_len": history_len}}
    for run_dir in settings.history_runs:
        saved = load_run(run_dir, flag="--history-runs").settings  # restore just the run that matches
        if (saved.agent, saved.scenario_label, saved.seed) == (agent, scenario_label(preset), seed) and (
            saved.scenario_config().env.history_len == history_len
        ):
            return restore_policy(run_dir, flag="--history-runs")[1]
    spec = get_agent(agent)
    overrides = merge_overrides(settings.scenario_overrides, extra)
    algo = settings.algo.get(agent, {})
    if spec.trains:
        run = RunSettings(
            agent=agent,
            scenario=preset,
            scenario_overrides=overrides,
            model=dict(settings.model),
            algo=algo,
            steps=settings.steps,
            seed=seed,
            device="cpu",
            final_eval_users=min(256, settings.users),
        )
        run_dir, _ = run_one(run, out / "runs" / f"history-{history_len}")
        return restore_policy(run_dir)[1]
    return spec.build(make_scenario(preset, overrides), algo, seed=seed, model=dict(settings.model))


def measure_history(settings: ValiditySettings, out: Path) -> pd.DataFrame:
    """Each history agent with the full history and with history_len 1, on the same users."""
    rows = []
    for preset in settings.history_presets:
        full = settings.scenario(preset).env.history_len
        for agent in settings.history_agents:
            for seed in settings.history_seeds:
                for history_len in (full, 1):
                    policy = _history_policy(settings, agent, preset, history_len, seed, out)
                    cfg = settings.scenario(preset, {"env": {"history_len": history_len}})
                    for eval_seed in settings.seeds:
                        m = evaluate(policy, cfg, settings.users, EVAL_SEED + eval_seed).metrics
                        rows.append(
                            dict(
                                preset=preset,
                                agent=agent,
                                train_seed=seed,
                                seed=eval_seed,
                                history_len=history_len,
                                full=history_len == full,
                                **m,
                            )
                        )
    return pd.DataFrame(rows)


# ------------------------------------------------------------------------------------ gates
@dataclass
class Gate:
    name: str
    where: str
    passed: bool
    figures: str


def _mean_ci(values: np.ndarray) -> str:
    lo, hi = mean_interval(values)
    return f"{np.mean(values):.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if np.isfinite(lo) else "")


def summary_table(policies: pd.DataFrame) -> pd.DataFrame:
    """Per preset and policy: mean return over seeds with its 95% t interval."""
    rows = []
    for (preset, policy), g in policies.groupby(["preset", "policy"], sort=False):
        lo, hi = mean_interval(g.return_mean.to_numpy())
        rows.append(
            dict(
                preset=preset,
                policy=policy,
                seeds=len(g),
                return_mean=g.return_mean.mean(),
                ci_low=lo,
                ci_high=hi,
                session_length=g.session_length.mean(),
                ctr=g.ctr.mean(),
            )
        )
    return pd.DataFrame(rows)


def evaluate_gates(policies: pd.DataFrame, drift: pd.DataFrame, history: pd.DataFrame) -> list[Gate]:
    gates: list[Gate] = []
    for preset, g in policies.groupby("preset", sort=False):
        by = g.pivot(index="seed", columns="policy", values="return_mean")
        ref = reference(str(preset))
        look = by[ref]
        short = ref.removeprefix("oracle-")
        blind = {p: by[p].mean() for p in USER_BLIND if p in by}
        best = max(blind, key=blind.get)
        share = blind[best] / look.mean()
        gates.append(
            Gate(
                "personalisation",
                preset,
                share <= BLIND_MAX,
                f"best user-blind {best} {_mean_ci(by[best])} = {share:.0%} of {short} "
                f"{_mean_ci(look)} (max {BLIND_MAX:.0%})",
            )
        )
        beaten = []
        for policy in by.columns:
            if policy == ref:
                continue
            diff = (by[policy] - look).to_numpy()
            lo, _ = mean_interval(diff)
            if diff.mean() > 0 and (not np.isfinite(lo) or lo > 0):
                beaten.append(f"{policy} +{diff.mean():.1f}")
        gates.append(
            Gate(
                "soundness",
                preset,
                not beaten,
                f"no policy beats {short} beyond its interval" if not beaten else "beaten by " + ", ".join(beaten),
            )
        )
        floor = LIFETIME_LONG_TERM_MIN if has_calendar(str(preset)) else LONG_TERM_MIN
        gain = look.mean() / by["oracle-myopic"].mean()
        gates.append(
            Gate(
                "long-term value",
                preset,
                gain >= floor,
                f"{short} {look.mean():.1f} = {gain - 1:+.0%} over myopic "
                f"{by['oracle-myopic'].mean():.1f} (min {floor - 1:+.0%})",
            )
        )
    if len(history):
        for (preset, agent), g in history.groupby(["preset", "agent"], sort=False):
            full, one = g[g.full].return_mean.to_numpy(), g[~g.full].return_mean.to_numpy()
            share = one.mean() / full.mean()
            gates.append(
                Gate(
                    "history",
                    f"{preset} / {agent}",
                    share <= HISTORY_MAX,
                    f"history_len 1 {_mean_ci(one)} = {share:.0%} of full history {_mean_ci(full)} "
                    f"(max {HISTORY_MAX:.0%})",
                )
            )
    if len(drift):
        ratios = drift.groupby(["preset", "magnitude"], sort=False).ratio.mean()
        for preset in dict.fromkeys(drift.preset):
            r = ratios[preset]
            shortfall = 1.0 - r.to_numpy()
            grows = bool(np.all(np.diff(shortfall) > 0))
            text = ", ".join(f"m={m:g}: {v:.3f}" for m, v in r.items())
            gates.append(Gate("drift: shortfall grows with magnitude", preset, grows, f"stale / true-state {text}"))
            if preset in ("shock", "mixed") and 1.0 in r.index:
                worse = [m for m in r.index if m > 1.0]
                ok = r[1.0] <= STALE_MAX and all(r[m] < r[1.0] for m in worse)
                gates.append(
                    Gate(
                        "drift: stale-state falls short",
                        preset,
                        ok,
                        f"m=1: {r[1.0]:.1%} of true-state (max {STALE_MAX:.0%})"
                        + "".join(f"; m={m:g}: {r[m]:.1%}" for m in worse),
                    )
                )
        lifetimes = [p for p in dict.fromkeys(drift.preset) if has_calendar(str(p))]
        if lifetimes and "mixed" in set(drift.preset) and (("mixed", 1.0) in ratios.index):
            within = ratios[("mixed", 1.0)]
            for preset in lifetimes:
                across = ratios[(preset, 1.0)]
                gates.append(
                    Gate(
                        "drift: days bite harder than a session",
                        preset,
                        across < within,
                        f"stale / true-state at m=1: {across:.1%} across days vs {within:.1%} within a mixed session",
                    )
                )
    if "stationary" in set(policies.preset):
        g = policies[policies.preset == "stationary"].pivot(index="seed", columns="policy", values="return_mean")
        tie = bool(np.allclose(g["oracle-stale"], g["oracle-session"]))
        gates.append(
            Gate(
                "drift: no drift, no shortfall",
                "stationary",
                tie,
                f"stale {g['oracle-stale'].mean():.2f} vs true-state {g['oracle-session'].mean():.2f}",
            )
        )
    return gates


def gates_markdown(gates: list[Gate]) -> str:
    rows = [(g.name, g.where, "PASS" if g.passed else "**FAIL**", g.figures) for g in gates]
    return markdown_table(("gate", "where", "result", "figures"), rows)


def policies_markdown(summary: pd.DataFrame) -> str:
    presets = list(dict.fromkeys(summary.preset))
    policies = list(dict.fromkeys(summary.policy))
    cell = {
        (r.preset, r.policy): f"{r.return_mean:.1f} [{r.ci_low:.1f}, {r.ci_high:.1f}]"
        if np.isfinite(r.ci_low)
        else f"{r.return_mean:.1f}"
        for r in summary.itertuples()
    }
    return markdown_table(["policy", *presets], [[p, *(cell.get((s, p), "") for s in presets)] for p in policies])
