"""The flags of experiments/run.py and the RunSettings they make: flags win over the config file, which
wins over the toy sizes of --smoke and the defaults (lifetime scenarios have their own)."""

from __future__ import annotations

import argparse

from agents.registry import AGENTS, agent_names, get_agent
from envs.config import PRESETS
from experiments.core.harness import EVAL_SEED
from experiments.core.records import load_run
from experiments.core.settings import LIFETIME_RUN_DEFAULTS, RunSettings, settings_from_config

DEFAULTS = RunSettings()


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """run.py's flags (`description`: its --help text)."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--agent",
        default=DEFAULTS.agent,
        help=f"what to run: {', '.join(agent_names())}, or your own as a module path package.module:attr "
        "(a Policy class, a TrainableAgent class or a factory; docs/extending.md) (default: ppo)",
    )
    p.add_argument(
        "--scenario",
        default=DEFAULTS.scenario,
        help=f"scenario preset: {', '.join(PRESETS)}, or a scenario file FILE.yaml (default: {DEFAULTS.scenario})",
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
        help="continue a killed run from its last checkpoint (its saved settings are used; --steps may extend it, "
        "--device and --final-eval-users change it; run.json records what it goes on with)",
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
        help="environment steps between evaluations (default: a tenth of --steps; lifetime scenarios: half, a twelfth "
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
    return p


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


# What --resume may change (--logdir: where new runs go, unused): the budget, the device, and the final
# evaluation's users (a run whose final evaluation would not fit this machine can still be finished).
RESUME_FLAGS = ("steps", "device", "final_eval_users", "logdir")


def check_resume_flags(args: argparse.Namespace) -> None:
    """--resume takes the run's saved settings: a flag that would be ignored is an error."""
    defaults = build_parser().parse_args([])
    ignored = [
        "--" + name.replace("_", "-")
        for name, value in vars(args).items()
        if name not in (*RESUME_FLAGS, "resume") and value != getattr(defaults, name)
    ]
    if ignored:
        raise ValueError(
            f"--resume continues a run with its saved settings; {', '.join(ignored)} would be ignored "
            "(only --steps, --device and --final-eval-users may change)"
        )


def resume_settings(args: argparse.Namespace) -> RunSettings:
    """--resume RUN_DIR: the run's saved settings (run.json, through the one loader), with the --steps,
    --device and --final-eval-users given."""
    check_resume_flags(args)
    settings = load_run(args.resume, flag="--resume", finished=False, checkpoint=False).settings
    given = dict(steps=args.steps, device=args.device, final_eval_users=args.final_eval_users)
    return settings.replace(**{k: v for k, v in given.items() if v is not None})
