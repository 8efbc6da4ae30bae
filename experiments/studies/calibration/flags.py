"""The flags of experiments/calibrate.py and the CalibrationSettings they make (--smoke: toy sizes; flags win)."""

from __future__ import annotations

import argparse

from envs.config import MOVIELENS_FILE
from experiments.studies.calibration import fit as cal


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """calibrate.py's flags (`description`: its --help text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    d = cal.CalibrationSettings()
    p.add_argument("--out", default=None, help="report folder (default: runs/calibration/<time>)")
    p.add_argument("--smoke", action="store_true", help="toy sizes: few simulated users and bisection steps")
    p.add_argument("--sim-users", type=int, default=None, help=f"simulated users per run (default {d.sim_users})")
    p.add_argument("--rounds", type=int, default=None, help=f"passes over the simulated moments (default {d.rounds})")
    p.add_argument("--seed", type=int, default=None, help=f"simulation seed (default {d.seed})")
    p.add_argument("--update-preset", action="store_true", help=f"rewrite {MOVIELENS_FILE.name} with the fit")
    return p


def settings_from_args(args: argparse.Namespace) -> cal.CalibrationSettings:
    base = cal.SMOKE if args.smoke else cal.CalibrationSettings()
    given = {
        k: v for k, v in dict(sim_users=args.sim_users, rounds=args.rounds, seed=args.seed).items() if v is not None
    }
    settings = cal.CalibrationSettings(**{**cal.summary_settings(base), **given})
    if args.smoke and args.update_preset:
        raise ValueError("--update-preset with --smoke would write a toy fit into the preset; drop one")
    return settings
