"""The flags of experiments/validity.py and the ValiditySettings they make (--smoke: toy sizes; flags win)."""

from __future__ import annotations

import argparse

from agents.registry import get_agent
from envs.config import PRESETS
from experiments.core.settings import SMOKE_MODEL, SMOKE_SCENARIO
from experiments.studies.validity import gates as g

SMOKE = dict(seeds=(0, 1), users=32, steps=512, history_seeds=(0,), magnitudes=(1.0, 2.0))


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """validity.py's flags (`description`: its --help text)."""
    d = g.ValiditySettings()
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--presets",
        nargs="+",
        default=None,
        help=f"presets or scenario files FILE.yaml (default: all presets: {', '.join(PRESETS)})",
    )
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="evaluation seeds (default: 0 1 2)")
    p.add_argument("--users", type=int, default=None, help=f"users per seed (default: {d.users})")
    p.add_argument(
        "--history-agents",
        nargs="*",
        default=None,
        help=f"agents of the history ablation (default: {' '.join(d.history_agents)}; the flag with no names skips it; "
        "your own as a module path package.module:attr)",
    )
    p.add_argument(
        "--history-presets",
        nargs="+",
        default=None,
        help=f"presets of the history ablation (default: {' '.join(d.history_presets)})",
    )
    p.add_argument(
        "--history-seeds", nargs="+", type=int, default=None, help="training seeds of the history ablation (default: 0)"
    )
    p.add_argument(
        "--history-runs",
        nargs="+",
        default=(),
        metavar="RUN_DIR",
        help="trained run.py directories to load for the history ablation instead of training",
    )
    p.add_argument("--steps", type=int, default=None, help=f"PPO training budget (default: {d.steps})")
    p.add_argument("--out", default=None, help="output directory (default: runs/validity/<time>)")
    p.add_argument(
        "--update",
        default=None,
        metavar="DIR",
        help="merge into the report in DIR: the presets measured now replace theirs, the rest is kept",
    )
    p.add_argument("--smoke", action="store_true", help="toy sizes end to end (seconds)")
    return p


def settings_from_args(args: argparse.Namespace) -> g.ValiditySettings:
    kw: dict = {}
    history = args.history_agents or ()
    if args.smoke:  # toy sizes first; flags win
        kw.update(
            SMOKE,
            scenario_overrides=SMOKE_SCENARIO,
            model=SMOKE_MODEL,
            algo={  # the report's own agents and the history ablation's
                a: dict(get_agent(a).smoke)
                for a in dict.fromkeys(("ppo", "sasrec", "popularity", "item-score", "oracle-lookahead", *history))
                if get_agent(a).smoke
            },
        )
    for name in ("presets", "seeds", "history_agents", "history_presets", "history_seeds"):
        if getattr(args, name) is not None:
            kw[name] = tuple(getattr(args, name))
    for name in ("users", "steps"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    kw["history_runs"] = tuple(args.history_runs)
    return g.ValiditySettings(**kw)
