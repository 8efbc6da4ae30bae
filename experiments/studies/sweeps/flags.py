"""The flags of experiments/sweep.py and the SweepSettings they make (the base run as run.py builds it)."""

from __future__ import annotations

import argparse

from agents.registry import AGENTS
from envs.config import PRESETS
from experiments.core.settings import RunSettings, settings_from_config
from experiments.studies.sweeps.tune import SCHEDULERS, SweepSettings, load_space

DEFAULTS = RunSettings()


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """sweep.py's flags (`description`: its --help text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    trainable = [a for a, s in AGENTS.items() if s.trains]
    p.add_argument(
        "--agent",
        default="ppo",
        help=f"the agent to tune: {', '.join(trainable)}, or your own trainable agent as a module path "
        "package.module:attr (default: ppo)",
    )
    p.add_argument("--space", required=True, metavar="SPACE.yaml", help="the search space (see above)")
    p.add_argument("--scheduler", choices=SCHEDULERS, default="asha", help="asha (default) stops trailing trials")
    p.add_argument("--num-samples", type=int, default=8, help="trials (default 8)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled configs and of every trial's training")
    p.add_argument(
        "--scenario",
        default=DEFAULTS.scenario,
        help=f"scenario preset: {', '.join(PRESETS)}, or a scenario file FILE.yaml",
    )
    p.add_argument("--config", default=None, metavar="FILE.yaml", help="base run config (scenario:/model:/algo:)")
    p.add_argument("--steps", type=int, default=None, help=f"env steps per trial (default {DEFAULTS.steps:,d})")
    p.add_argument("--eval-users", type=int, default=None, help="users of each evaluation during training")
    p.add_argument("--final-eval-users", type=int, default=None, help="users of each trial's final evaluation")
    p.add_argument("--eval-interval", type=int, default=None, help="env steps between evaluations (ASHA's rungs)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="cuda: a GPU per trial")
    p.add_argument("--ray-address", default=None, help="join a running Ray cluster (default: start a local Ray)")
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: every core)")
    p.add_argument("--out", default=None, help="output folder (default: sweeps/<agent>-<time>)")
    p.add_argument("--smoke", action="store_true", help="toy sizes of run.py --smoke (for tests)")
    return p


def settings_from_args(args: argparse.Namespace) -> SweepSettings:
    base = settings_from_config(
        args.agent,
        args.scenario,
        args.config,
        smoke=args.smoke,
        seed=args.seed,
        device=args.device,
        ray_address=args.ray_address,
        steps=args.steps,
        eval_users=args.eval_users,
        final_eval_users=args.final_eval_users,
        eval_interval=args.eval_interval,
    )
    return SweepSettings(
        base=base,
        space=load_space(args.space),
        num_samples=args.num_samples,
        scheduler=args.scheduler,
        seed=args.seed,
        num_cpus=args.num_cpus,
    )
