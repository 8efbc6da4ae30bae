"""The flags of experiments/offline.py and the OfflineSettings they make (--smoke: toy sizes; flags win)."""

from __future__ import annotations

import argparse

from agents.registry import get_agent
from envs.config import PRESETS
from experiments.core.settings import SMOKE_MODEL, SMOKE_SCENARIO
from experiments.studies.offline import study as oe

SMOKE = dict(seeds=(0, 1), eval_users=24, log_users=16, log_steps=60)


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """offline.py's flags (`description`: its --help text)."""
    d = oe.OfflineSettings()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--scenario",
        default=d.scenario,
        help=f"preset ({', '.join(PRESETS)}) or scenario file FILE.yaml (default {d.scenario})",
    )
    p.add_argument(
        "--agents",
        nargs="+",
        default=None,
        help=f"default: {' '.join(d.agents)}; your own as a module path package.module:attr",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="evaluation seeds (default: 0 1 2)")
    p.add_argument("--eval-users", type=int, default=None, help=f"users per seed (default {d.eval_users})")
    p.add_argument("--log-users", type=int, default=None, help=f"training logs: sessions (default {d.log_users})")
    p.add_argument("--log-steps", type=int, default=None, help=f"training logs: steps (default {d.log_steps})")
    p.add_argument("--epsilon", type=float, default=None, help=f"logging exploration (default {d.epsilon})")
    p.add_argument("--k", type=int, nargs="+", default=None, help="ranking cutoffs (default: 5 10)")
    p.add_argument("--logs-scenario", default=None, help="the preset the logs come from (default: --scenario)")
    p.add_argument("--eval-steps", type=int, default=None, help="steps logged per evaluation seed")
    p.add_argument("--epochs", type=int, default=None, help="training epochs of sasrec and gru4rec")
    p.add_argument("--ppo-run", default=None, metavar="DIR", help="a trained PPO run (run.py) to add as agent ppo")
    p.add_argument("--out", default=None, help="output directory (default: runs/offline/<scenario>-<time>)")
    p.add_argument("--smoke", action="store_true", help="toy sizes end to end (seconds)")
    p.add_argument("--export-minari", default=None, metavar="DIR", help="write the logs as a Minari dataset and stop")
    p.add_argument("--logs", default=None, metavar="FILE", help="with --export-minari: a Parquet log to export")
    p.add_argument("--dataset-id", default=None, help="Minari dataset id (default driftrec/<scenario>/logs-v0)")
    return p


def settings_from_args(args: argparse.Namespace) -> oe.OfflineSettings:
    kw: dict = {"scenario": args.scenario, "ppo_run": args.ppo_run}
    algo: dict = {}
    agents = args.agents or oe.OfflineSettings.agents
    if args.smoke:  # toy sizes first; flags win
        kw.update(SMOKE, scenario_overrides=SMOKE_SCENARIO, model=SMOKE_MODEL)
        algo = {a: dict(get_agent(a).smoke) for a in agents if get_agent(a).smoke}
    if args.epochs is not None:  # every agent fitted for epochs (sasrec, gru4rec)
        for a in agents:
            if hasattr(get_agent(a).make_params(), "epochs"):
                algo[a] = {**algo.get(a, {}), "epochs": args.epochs}
    kw["algo"] = algo
    for name in ("agents", "seeds"):
        if getattr(args, name) is not None:
            kw[name] = tuple(getattr(args, name))
    if args.k is not None:
        kw["cutoffs"] = tuple(args.k)
    for name in ("eval_users", "log_users", "log_steps", "epsilon", "logs_scenario", "eval_steps"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    return oe.OfflineSettings(**kw)
