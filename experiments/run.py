"""Train (if the agent trains) and evaluate one agent on one scenario.

  python experiments/run.py --agent ppo                      # PPO on `mixed`, ~7 min on 2 CPU cores
  python experiments/run.py --agent ppo --scenario lifetime  # 60-day lives, lifetime defaults: <= 15 min
  python experiments/run.py --agent sb3-ppo --scenario cognitive --steps 200000
  python experiments/run.py --agent oracle-session           # evaluate a reference policy
  python experiments/run.py --agent ppo --seeds 0 1 2 --parallel 2
  python experiments/run.py --resume runs/mixed/ppo/0-20261124-101500

Writes runs/<scenario>/<agent>/<seed>-<time>/: TensorBoard events (train/*, eval/* against
environment steps), results.csv, run.json, checkpoint/. A thin front end over experiments/runs.py.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from agents.registry import AGENTS, get_agent
from envs.config import PRESETS
from experiments.core.checkpoints import Interrupted
from experiments.core.fanout import run_seeds
from experiments.core.harness import EVAL_SEED
from experiments.core.restore import load_run
from experiments.core.settings import LIFETIME_RUN_DEFAULTS, RunSettings, settings_from_config
from experiments.core.training import run_one

DEFAULTS = RunSettings()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agent", default=DEFAULTS.agent, help=f"what to run: {', '.join(AGENTS)} (default: ppo)")
    p.add_argument(
        "--scenario",
        default=DEFAULTS.scenario,
        help=f"scenario preset: {', '.join(PRESETS)} (default: {DEFAULTS.scenario})",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help=f"training budget in environment (user) steps (default: {DEFAULTS.steps}; lifetime scenarios: "
        f"{LIFETIME_RUN_DEFAULTS['steps']}; ignored by agents that do not train)",
    )
    p.add_argument(
        "--seed", type=int, default=DEFAULTS.seed, help=f"training seed (evaluation users are fixed: seed {EVAL_SEED})"
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=None,
        metavar="SEED",
        help="run several seeds (one run directory each); overrides --seed",
    )
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        help="with --seeds: runs at a time, as Ray tasks (local Ray, or the cluster of --ray-address)",
    )
    p.add_argument(
        "--retrain-every",
        type=int,
        default=None,
        metavar="K",
        help="agents that retrain (sasrec, gru4rec): refit on logs + fresh interactions every K served steps",
    )
    p.add_argument(
        "--retrain-every-days",
        type=float,
        default=None,
        metavar="D",
        help="agents that retrain, on lifetime scenarios: served from day algo.train_days (default 30) on, "
        "refit every D days on logs + what their own serving produced (0: never)",
    )
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="where the learner runs; auto (default) picks cuda when a GPU is visible (env runners "
        "stay on CPU); with --resume, the device the run trained on unless given",
    )
    p.add_argument("--logdir", default="runs", help="root of the run directories (default: runs)")
    p.add_argument(
        "--config",
        default=None,
        metavar="FILE.yaml",
        help="YAML with optional sections scenario: (env/world overrides), model: (encoder), "
        "algo: (the agent's settings)",
    )
    p.add_argument("--smoke", action="store_true", help="toy sizes end to end in seconds (for tests)")
    p.add_argument(
        "--resume",
        default=None,
        metavar="RUN_DIR",
        help="continue a killed run from its last checkpoint (its saved settings are used; --steps may extend it)",
    )
    p.add_argument(
        "--num-env-runners", type=int, default=None, help="RLlib env-runner processes (default 0: sample in the driver)"
    )
    p.add_argument("--ray-address", default=None, help="join an existing Ray cluster instead of starting a local one")
    p.add_argument(
        "--eval-users",
        type=int,
        default=None,
        help=f"evaluation users during training (default: {DEFAULTS.eval_users}; lifetime scenarios: "
        f"{LIFETIME_RUN_DEFAULTS['eval_users']})",
    )
    p.add_argument(
        "--final-eval-users",
        type=int,
        default=None,
        help=f"evaluation users at the end (default: {DEFAULTS.final_eval_users}; lifetime scenarios: "
        f"{LIFETIME_RUN_DEFAULTS['final_eval_users']})",
    )
    p.add_argument(
        "--eval-interval",
        type=int,
        default=None,
        help="environment steps between evaluations (default: a tenth of --steps; lifetime scenarios: half, a sixth "
        "for ppo, which keeps its best snapshot there)",
    )
    p.add_argument(
        "--keep-best",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="evaluate during training on validation users and end with the best snapshot there, not the last "
        "(default: off; on for ppo on lifetime scenarios, with a critic warm-up: --no-keep-best turns it off)",
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=None,
        help=f"training iterations between checkpoints (default: {DEFAULTS.checkpoint_every})",
    )
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> RunSettings:
    """RunSettings from the flags and the config file; explicit flags win over --smoke sizes."""
    spec = get_agent(args.agent)
    algo = {}
    if args.num_env_runners is not None:
        if not spec.uses_ray:
            users = [a for a, s in AGENTS.items() if s.uses_ray]
            raise ValueError(f"--num-env-runners applies to --agent {' or '.join(users)} only")
        algo["num_env_runners"] = args.num_env_runners
    for flag, name in (("--retrain-every", "retrain_every"), ("--retrain-every-days", "retrain_every_days")):
        if getattr(args, name) is not None:
            if not spec.retrains:
                users = [a for a, s in AGENTS.items() if s.retrains]
                raise ValueError(f"{flag} applies to --agent {' or '.join(users)} only")
            algo[name] = getattr(args, name)
    if args.parallel < 1:
        raise ValueError("--parallel must be >= 1")
    return settings_from_config(
        args.agent,
        args.scenario,
        args.config,
        smoke=args.smoke,
        algo=algo,
        seed=args.seed,
        device=args.device or DEFAULTS.device,
        ray_address=args.ray_address,
        steps=args.steps,
        eval_users=args.eval_users,
        final_eval_users=args.final_eval_users,
        eval_interval=args.eval_interval,
        checkpoint_every=args.checkpoint_every,
        keep_best=args.keep_best,
    )


RESUME_FLAGS = ("steps", "device", "logdir")  # what --resume may change (--logdir: where new runs go, unused)


def check_resume_flags(args: argparse.Namespace) -> None:
    """--resume takes the run's saved settings: a flag that would be ignored is an error."""
    defaults = parse_args([])
    ignored = [
        "--" + name.replace("_", "-")
        for name, value in vars(args).items()
        if name not in (*RESUME_FLAGS, "resume") and value != getattr(defaults, name)
    ]
    if ignored:
        raise ValueError(
            f"--resume continues a run with its saved settings; {', '.join(ignored)} would be ignored "
            "(only --steps and --device may change)"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logdir = args.logdir
    try:
        if args.resume:
            check_resume_flags(args)
            settings = load_run(args.resume)
            changes = {k: v for k, v in dict(steps=args.steps, device=args.device).items() if v is not None}
            run_dir, _ = run_one(settings.replace(**changes), args.logdir, resume=args.resume)
            logdir = str(Path(run_dir).parent.parent.parent)  # runs/<scenario>/<agent>/<run>: its root
        elif args.seeds:
            settings = settings_from_args(args)
            results = run_seeds(settings, args.seeds, args.logdir, args.parallel)
            returns = [m["return_mean"] for _, m in results]
            print(
                f"\n{settings.name} on {settings.scenario}: return_mean per seed "
                + ", ".join(f"{r:.2f}" for r in returns)
            )
        else:
            run_one(settings_from_args(args), args.logdir)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # checkpointed: the conventional exit status of a signal
        return 128 + int(stop.signum)
    print(f"tensorboard --logdir {shlex.quote(str(logdir))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
