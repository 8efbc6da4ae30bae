"""The flags of experiments/stress.py and the StressSettings they make: the toy sizes of --smoke first,
then on a calendar run.py's lifetime budget and each agent's lifetime settings, then the config file
and the flags given."""

from __future__ import annotations

import argparse
from typing import Any

from agents.registry import RETRAIN_SUFFIX, get_agent
from experiments.core.settings import (
    LIFETIME_RUN_DEFAULTS,
    SMOKE_MODEL,
    SMOKE_SCENARIO,
    load_config_sections,
    resolves_with_calendar,
)
from experiments.studies.stress import (
    DEFAULT_AGENTS,
    FAMILIES,
    STRESS_SMOKE,
    StressSettings,
)
from experiments.studies.stress.settings import (
    SESSION_REFERENCE,
    SMOKE_LIFETIME_SCENARIO,
    STRESS_SMOKE_LIFETIME,
    TEMPORAL_DEFAULTS,
    base_agent,
)
from simulator.params import merge_overrides


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """stress.py's flags (`description`: its --help text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = StressSettings()
    p.add_argument(
        "--agents",
        nargs="*",
        default=None,
        help=f"agents to stress (default: {' '.join(DEFAULT_AGENTS)}; NAME{RETRAIN_SUFFIX} refits an "
        "agent that retrains; your own as a module path package.module:attr)",
    )
    p.add_argument("--families", nargs="+", default=None, help=f"drift families (default: {' '.join(FAMILIES)})")
    p.add_argument(
        "--magnitudes", nargs="+", type=float, default=None, help="drift magnitudes, >= 0 (default: 0 0.5 1 2)"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="training seeds (default: 0 1 2)")
    p.add_argument(
        "--train-scenario",
        default=d.train_scenario,
        help=f"training regime: a preset or a scenario file FILE.yaml (default: {d.train_scenario})",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training budget of PPO agents (default: {d.steps}; on a calendar: "
        f"{LIFETIME_RUN_DEFAULTS['steps']}, run.py's lifetime budget)",
    )
    p.add_argument(
        "--eval-users", type=int, default=None, help=f"evaluation users per regime (default: {d.eval_users})"
    )
    p.add_argument(
        "--reference", default=None, help="regret reference (default: oracle-lookahead; temporal: oracle-lifetime)"
    )
    p.add_argument(
        "--shock-step", type=int, default=None, help=f"step of the shock, session scenarios (default: {d.shock_step})"
    )
    p.add_argument("--train-days", type=float, default=None, help="temporal: trained on days [0, D) (default: 30)")
    p.add_argument("--serve-days", type=float, default=None, help="temporal: days of the lives served (default: 90)")
    p.add_argument(
        "--shock-day",
        type=float,
        default=None,
        help="temporal: day of the shock (default: a quarter into the serving window, 45)",
    )
    p.add_argument(
        "--retrain-days",
        nargs="+",
        type=float,
        default=None,
        help=f"temporal: refit cadences (days) that NAME{RETRAIN_SUFFIX} stands for (default: 7 1)",
    )
    p.add_argument(
        "--recovery-magnitude",
        type=float,
        default=d.recovery_magnitude,
        help="shock magnitude for the recovery analysis (default: 1)",
    )
    p.add_argument(
        "--retrain-every",
        type=int,
        default=None,
        help=f"served steps between refits of *{RETRAIN_SUFFIX} agents, session scenarios (default: {d.retrain_every})",
    )
    p.add_argument(
        "--load",
        nargs="+",
        default=(),
        metavar="RUN_DIR",
        help="trained run directories (run.py output) to stress instead of training those agents",
    )
    p.add_argument("--out", default=None, help="output directory (default: runs/stress/<time>)")
    p.add_argument("--parallel", type=int, default=1, help="jobs at a time, as Ray tasks (default: 1, in-process)")
    p.add_argument("--ray-address", default=None, help="run the jobs on an existing Ray cluster")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu", help="where learners train")
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="YAML with optional sections scenario: (training-regime overrides), model:, algo: {AGENT: {...}}",
    )
    p.add_argument("--smoke", action="store_true", help="toy sizes end to end (under two minutes)")
    p.add_argument(
        "--report-only",
        default=None,
        metavar="OUT_DIR",
        help="redo the tables, plots and report of a finished stress test from its saved evaluations",
    )
    return p


def settings_from_args(args: argparse.Namespace) -> StressSettings:
    kw: dict[str, Any] = {}
    algo: dict[str, dict[str, Any]] = {}
    agents = tuple(args.agents) if args.agents is not None else (() if args.load else DEFAULT_AGENTS)
    temporal = resolves_with_calendar(args.train_scenario)
    reference = args.reference or (TEMPORAL_DEFAULTS["reference"] if temporal else SESSION_REFERENCE)
    stressed = {base_agent(a) for a in agents} | {reference}
    if temporal and not args.smoke:  # trained agents get run.py's lifetime budget and settings
        kw["steps"] = LIFETIME_RUN_DEFAULTS["steps"]
        algo = {name: dict(get_agent(name).lifetime.algo) for name in stressed if get_agent(name).lifetime.algo}
    if args.smoke:  # toy sizes first: flags and the config file override them
        kw.update(STRESS_SMOKE, scenario_overrides=SMOKE_SCENARIO, model=SMOKE_MODEL)
        if temporal:
            kw.update(STRESS_SMOKE_LIFETIME, scenario_overrides=SMOKE_LIFETIME_SCENARIO)
            del kw["shock_step"]
        algo = {name: dict(get_agent(name).smoke) for name in stressed if get_agent(name).smoke}
    kw["agents"] = agents
    for name in ("families", "magnitudes", "seeds", "retrain_days"):
        if getattr(args, name) is not None:
            kw[name] = tuple(getattr(args, name))
    if args.config:
        cfg = load_config_sections(args.config)
        kw["scenario_overrides"] = merge_overrides(kw.get("scenario_overrides", {}), cfg.get("scenario", {}))
        kw["model"] = {**kw.get("model", {}), **cfg.get("model", {})}
        for agent, settings in cfg.get("algo", {}).items():
            if not isinstance(settings, dict):
                raise ValueError(
                    f"algo.{agent} in {args.config} must map that agent's settings "
                    "(stress configs key algo: by agent name)"
                )
            algo[agent] = {**algo.get(agent, {}), **settings}
    for name in ("steps", "eval_users", "shock_step", "train_days", "serve_days", "shock_day", "retrain_every"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    for flag, name in (("--shock-step", "shock_step"), ("--retrain-every", "retrain_every")):
        if temporal and getattr(args, name) is not None:
            raise ValueError(
                f"{flag} is for session scenarios: '{args.train_scenario}' has a calendar "
                "(--shock-day dates the shock, --retrain-days sets the refit cadences)"
            )
    kw.update(
        train_scenario=args.train_scenario,
        reference=args.reference,
        loads=tuple(args.load),
        algo=algo,
        recovery_magnitude=args.recovery_magnitude,
        device=args.device,
    )
    if args.parallel < 1:
        raise ValueError("--parallel must be >= 1")
    return StressSettings(**kw)
