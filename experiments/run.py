"""Train (if the agent trains) and evaluate one agent on one scenario.

  python experiments/run.py --agent ppo                      # PPO on `mixed`, ~7 min on 2 CPU cores
  python experiments/run.py --agent ppo --scenario lifetime  # 60-day lives, lifetime defaults: <= 15 min
  python experiments/run.py --agent sb3-ppo --scenario cognitive --steps 200000
  python experiments/run.py --agent oracle-session           # evaluate a reference policy
  python experiments/run.py --agent ppo --seeds 0 1 2 --parallel 2
  python experiments/run.py --resume runs/mixed/ppo/0-20261124-101500

Writes runs/<scenario>/<agent>/<seed>-<time>/: TensorBoard events (train/*, eval/* against
environment steps), results.csv, run.json, checkpoint/. A thin front end over experiments/core/.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from experiments.core.checkpoints import Interrupted
from experiments.core.fanout import run_seeds
from experiments.core.flags import build_parser, resume_settings, settings_from_args
from experiments.core.training import run_one


def main(argv: list[str] | None = None) -> int:
    args = build_parser(__doc__).parse_args(argv)
    logdir = args.logdir
    try:
        if args.resume:
            run_dir, _ = run_one(resume_settings(args), args.logdir, resume=args.resume)
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
