"""The validity report: does who the user is, what they did and how their tastes moved decide what pays?

  python experiments/validity.py --smoke                 # the whole report at toy sizes (seconds)
  python experiments/validity.py --out docs/validity     # every preset, 3 seeds x 1,024 users
  python experiments/validity.py --history-runs runs/validity/*/*/ppo/*   # reuse trained PPO runs

Measures, on the same users for every policy (common random numbers): random, the user-blind
policies (highest rating, most popular, the feature model, logged popularity, the linear item
score tuned on a separate seed), the myopic, session, stale-state and lookahead oracles, the
stale-state oracle under each drift preset's magnitudes, and a history ablation (PPO and sasrec
with the full history and with history_len 1). Prints the gates (experiments/gates.py) as
pass/fail with their figures and writes report.md, gates.csv, policies.csv, drift.csv and
history.csv to --out. Exits 1 when a gate fails. The headroom of long-term reasoning (random,
myopic, session, lookahead) is part of the policy table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from agents.registry import get_agent
from envs.config import PRESETS
from experiments import gates as g
from experiments.runs import SMOKE_MODEL, SMOKE_SCENARIO, writable_dir

SMOKE = dict(seeds=(0, 1), users=32, steps=512, history_seeds=(0,), magnitudes=(1.0, 2.0))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    d = g.ValiditySettings()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=None, help=f"presets (default: all: {', '.join(PRESETS)})")
    p.add_argument("--seeds", nargs="+", type=int, default=None, help="evaluation seeds (default: 0 1 2)")
    p.add_argument("--users", type=int, default=None, help=f"users per seed (default: {d.users})")
    p.add_argument(
        "--history-agents",
        nargs="*",
        default=None,
        help=f"agents of the history ablation (default: {' '.join(d.history_agents)}; none: skip it)",
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
    p.add_argument("--smoke", action="store_true", help="toy sizes end to end (seconds)")
    return p.parse_args(argv)


def settings_from_args(args: argparse.Namespace) -> g.ValiditySettings:
    kw: dict = {}
    if args.smoke:  # toy sizes first; flags win
        kw.update(
            SMOKE,
            scenario_overrides=SMOKE_SCENARIO,
            model=SMOKE_MODEL,
            algo={
                a: dict(get_agent(a).smoke) for a in ("ppo", "sasrec", "popularity", "item-score", "oracle-lookahead")
            },
        )
    for name in ("presets", "seeds", "history_agents", "history_seeds"):
        if getattr(args, name) is not None:
            kw[name] = tuple(getattr(args, name))
    for name in ("users", "steps"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    kw["history_runs"] = tuple(args.history_runs)
    return g.ValiditySettings(**kw)


def write_report(
    settings: g.ValiditySettings,
    tables: dict[str, pd.DataFrame],
    gates: list[g.Gate],
    out: Path,
    command: str,
    seconds: float,
) -> Path:
    summary = g.summary_table(tables["policies"])
    lines = [
        "# Validity report",
        "",
        f"`{command}` ({seconds / 60:.1f} min on this machine)",
        "",
        f"Every policy meets the same users: seeds {', '.join(map(str, settings.seeds))} x {settings.users} users "
        "per preset (common random numbers). Return in minutes watched per session, mean over seeds "
        "[95% t interval].",
        "",
        "## Gates",
        "",
        g.gates_markdown(gates),
        "",
        "## Returns",
        "",
        g.policies_markdown(summary),
        "",
        "User-blind policies score candidates from item features only: `max-rating` (highest observed mean "
        "rating), `max-popularity`, `feature-model` (the simulator's response model on item features with "
        "the user left out), `popularity` (most watched in logs), `item-score` (a linear score over item "
        "features tuned on users of a separate seed). `oracle-stale` is the session oracle planning with the "
        "user's tastes as at the start of the episode.",
        "",
    ]
    if len(tables["drift"]):
        d = tables["drift"].groupby(["preset", "magnitude"], sort=False).ratio.mean().unstack()
        lines += ["## Drift: stale-state over true-state oracle", "", g.frame_markdown(d, ".3f"), ""]
    if len(tables["history"]):
        h = tables["history"].groupby(["preset", "agent", "history_len"], sort=False).return_mean.mean().unstack()
        lines += ["## History ablation (mean return)", "", g.frame_markdown(h, ".1f"), ""]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = settings_from_args(args)
        out = writable_dir(args.out or Path("runs") / "validity" / time.strftime("%Y%m%d-%H%M%S"), "--out")
        started = time.perf_counter()
        tables = dict(
            policies=g.measure_policies(settings),
            drift=g.measure_drift(settings),
            history=g.measure_history(settings, out) if settings.history_agents else pd.DataFrame(),
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    gates = g.evaluate_gates(tables["policies"], tables["drift"], tables["history"])
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    pd.DataFrame([vars(x) for x in gates]).to_csv(out / "gates.csv", index=False)
    command = "python experiments/validity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    report = write_report(settings, tables, gates, out, command.strip(), time.perf_counter() - started)
    print(g.gates_markdown(gates))
    print(f"\nreport: {report}")
    failed = [x for x in gates if not x.passed]
    print(f"{len(gates) - len(failed)} of {len(gates)} gates pass", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
