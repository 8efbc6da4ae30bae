"""The validity report: does who the user is, what they did and how their tastes moved decide what pays?

  python experiments/validity.py --smoke                 # the whole report at toy sizes (seconds)
  python experiments/validity.py --out docs/validity     # every preset, 3 seeds x 1,024 users
  python experiments/validity.py --history-runs runs/validity/*/*/ppo/*   # reuse trained PPO runs
  python experiments/validity.py --presets mixed --update docs/validity   # re-measure what a change moved

Measures, on the same users for every policy (common random numbers): random, the user-blind
policies (highest rating, most popular, the feature model, logged popularity, the linear item
score tuned on a separate seed), the myopic, session, stale-state and lookahead oracles, the
stale-state oracle under each drift preset's magnitudes, and a history ablation (PPO and sasrec
with the full history and with history_len 1). Prints the gates (experiments/gates.py) as
pass/fail with their figures and writes report.md, gates.csv, policies.csv, drift.csv and
history.csv to --out. With --update DIR, the presets measured now replace theirs in the report
already in DIR (the rest is kept, and commands.csv says which command measured what); the gates
are evaluated on the merged tables. Exits 1 when a gate fails. The headroom of long-term reasoning (random,
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
from experiments.core.rundirs import writable_dir
from experiments.core.settings import SMOKE_MODEL, SMOKE_SCENARIO
from experiments.studies.validity import gates as g

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
        help=f"agents of the history ablation (default: {' '.join(d.history_agents)}; the flag with no names skips it)",
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
    for name in ("presets", "seeds", "history_agents", "history_presets", "history_seeds"):
        if getattr(args, name) is not None:
            kw[name] = tuple(getattr(args, name))
    for name in ("users", "steps"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    kw["history_runs"] = tuple(args.history_runs)
    return g.ValiditySettings(**kw)


TABLES = ("policies", "drift", "history")


def read_previous(
    directory: str | Path, settings: g.ValiditySettings
) -> tuple[Path, dict[str, pd.DataFrame], pd.DataFrame]:
    """The report in `directory` to update: its tables and commands.csv (a report written before
    commands.csv existed counts as one earlier, unnamed command). A ValueError names what is missing,
    or a report measured on other evaluation seeds (its rows and the new ones would not share users)."""
    directory = Path(directory)
    tables = {}
    for name in TABLES:
        path = directory / f"{name}.csv"
        if not path.is_file():
            raise ValueError(f"--update {directory}: no {name}.csv there (is it a validity report?)")
        try:
            tables[name] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            tables[name] = pd.DataFrame()
        except (pd.errors.ParserError, UnicodeDecodeError) as err:
            raise ValueError(f"--update {directory}: {name}.csv is unreadable: {err}") from None
        if len(tables[name]) and "preset" not in tables[name]:
            raise ValueError(f"--update {directory}: {name}.csv has no preset column")
    seeds = sorted(set(tables["policies"].get("seed", pd.Series(dtype=int))))
    if seeds and seeds != sorted(settings.seeds):
        raise ValueError(
            f"--update {directory}: its report was measured on seeds {seeds}, this run on {sorted(settings.seeds)}"
        )
    commands_path = directory / "commands.csv"
    if commands_path.is_file():
        commands = pd.read_csv(commands_path)
    else:
        measured = sorted(set(tables["policies"].get("preset", pd.Series(dtype=str))))
        commands = pd.DataFrame([dict(command="(an earlier run)", presets=" ".join(measured), minutes=float("nan"))])
    return writable_dir(directory, "--update"), tables, commands


def merge_tables(
    previous: dict[str, pd.DataFrame], new: dict[str, pd.DataFrame], settings: g.ValiditySettings
) -> dict[str, pd.DataFrame]:
    """`previous` with the rows measured now replaced: policies and drift by preset, the history
    ablation by (preset, agent) when it ran."""
    merged = {}
    for name in TABLES:
        old, fresh = previous[name], new[name]
        if not len(old):
            merged[name] = fresh
            continue
        if name == "history":  # no history agents: nothing replaced
            replaced = old.preset.isin(settings.history_presets) & old.agent.isin(settings.history_agents)
        else:
            replaced = old.preset.isin(settings.presets)
        merged[name] = pd.concat([old[~replaced], fresh], ignore_index=True)
    return merged


def write_report(
    settings: g.ValiditySettings,
    tables: dict[str, pd.DataFrame],
    gates: list[g.Gate],
    out: Path,
    commands: pd.DataFrame,
) -> Path:
    summary = g.summary_table(tables["policies"])
    measured_by = [
        f"- `{c.command}` ({c.minutes:.1f} min on this machine): {c.presets}"
        if pd.notna(c.minutes)
        else f"- {c.command}: {c.presets}"
        for c in commands.itertuples()
    ]
    lines = [
        "# Validity report",
        "",
        "Measured by (a later command's presets replace an earlier one's):",
        "",
        *measured_by,
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
        if args.update and args.out:
            raise ValueError("--update DIR writes into DIR: give --update or --out, not both")
        if args.update:
            out, previous, commands = read_previous(args.update, settings)
        else:
            out = writable_dir(args.out or Path("runs") / "validity" / time.strftime("%Y%m%d-%H%M%S"), "--out")
            previous, commands = None, pd.DataFrame(columns=["command", "presets", "minutes"])
        started = time.perf_counter()
        tables = dict(
            policies=g.measure_policies(settings),
            drift=g.measure_drift(settings),
            history=g.measure_history(settings, out) if settings.history_agents else pd.DataFrame(),
        )
        if previous is not None:  # read again: an update that finished meanwhile keeps its rows
            out, previous, commands = read_previous(args.update, settings)
            tables = merge_tables(previous, tables, settings)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = "python experiments/validity.py " + " ".join(argv if argv is not None else sys.argv[1:])
    measured = " ".join(settings.presets)
    if settings.history_agents:
        measured += f" (history: {' '.join(settings.history_agents)} on {' '.join(settings.history_presets)})"
    now = dict(command=command.strip(), presets=measured, minutes=(time.perf_counter() - started) / 60)
    commands = pd.concat([commands, pd.DataFrame([now])], ignore_index=True)
    gates = g.evaluate_gates(tables["policies"], tables["drift"], tables["history"])
    for name, table in tables.items():
        table.to_csv(out / f"{name}.csv", index=False)
    pd.DataFrame([vars(x) for x in gates]).to_csv(out / "gates.csv", index=False)
    commands.to_csv(out / "commands.csv", index=False)
    report = write_report(settings, tables, gates, out, commands)
    print(g.gates_markdown(gates))
    print(f"\nreport: {report}")
    failed = [x for x in gates if not x.passed]
    print(f"{len(gates) - len(failed)} of {len(gates)} gates pass", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
