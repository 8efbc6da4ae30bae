"""Offline evaluation against the simulator's truth, and offline-RL datasets.

  python experiments/offline.py --smoke                           # the whole study at toy sizes (seconds)
  python experiments/offline.py --out docs/offline/mixed          # mixed: 3 seeds x 512 users
  python experiments/offline.py --scenario stationary --out docs/offline/stationary
  python experiments/offline.py --scenario shock --logs-scenario stationary --out docs/offline/shock-from-stationary
  python experiments/offline.py --export-minari DIR [--logs FILE]  # the logs as a Minari dataset, nothing else

The study (experiments/offline_eval.py): per agent, offline ranking metrics on held-out logs and
off-policy estimates (IPS, SNIPS, DM, DR) next to its true return on the same users; Kendall's tau
between each offline order and the true one; the estimators' bias and RMSE over seeds. Writes
report.md, CSVs and plots to --out. `--export-minari DIR` writes the training logs (or --logs FILE)
as the Minari dataset --dataset-id under DIR; load it with MINARI_DATASETS_PATH=DIR and
minari.load_dataset(ID).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from agents.registry import get_agent
from envs.config import PRESETS
from experiments.core.rundirs import writable_dir
from experiments.core.settings import SMOKE_MODEL, SMOKE_SCENARIO
from experiments.studies.offline import study as oe

SMOKE = dict(seeds=(0, 1), eval_users=24, log_users=16, log_steps=60)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = oe.OfflineSettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scenario", default=d.scenario, help=f"preset ({', '.join(PRESETS)}; default {d.scenario})")
    p.add_argument("--agents", nargs="+", default=None, help=f"default: {' '.join(d.agents)}")
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
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> oe.OfflineSettings:
    kw: dict = {"scenario": args.scenario, "ppo_run": args.ppo_run}
    algo: dict = {}
    if args.smoke:  # toy sizes first; flags win
        kw.update(SMOKE, scenario_overrides=SMOKE_SCENARIO, model=SMOKE_MODEL)
        algo = {a: dict(get_agent(a).smoke) for a in ("sasrec", "gru4rec", "item-score")}
    if args.epochs is not None:
        for kind in ("sasrec", "gru4rec"):
            algo[kind] = {**algo.get(kind, {}), "epochs": args.epochs}
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        if args.logs is not None and args.export_minari is None:
            raise ValueError("--logs is read by --export-minari only")
        if args.export_minari is not None:
            root = writable_dir(args.export_minari, "--export-minari")
            dataset_id = args.dataset_id or f"driftrec/{settings.scenario}/logs-v0"
            steps, path = oe.export_logs(settings, root, dataset_id, args.logs)
            print(f"{steps.n_episodes:,} episodes, {len(steps):,} steps -> Minari dataset {dataset_id} at {path}")
            print(f"load: MINARI_DATASETS_PATH={root} python -c \"import minari; minari.load_dataset('{dataset_id}')\"")
            return 0
        stamp = time.strftime("%Y%m%d-%H%M%S")
        out = writable_dir(args.out or Path("runs") / "offline" / f"{settings.scenario}-{stamp}", "--out")
        started = time.perf_counter()
        result = oe.run_study(settings, progress=lambda line: print(line, file=sys.stderr))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = "python experiments/offline.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = oe.write_report(settings, result, out, command.strip(), time.perf_counter() - started)
    print(report.read_text())
    print(f"report: {report}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
