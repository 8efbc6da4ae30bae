"""The validity report: the measured tables, the gates on them and report.md; an update merges the presets
measured now into a report already written (commands.csv says which command measured what)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from experiments.core.commands import repo_relative
from experiments.core.rundirs import staged, writable_dir
from experiments.core.tables import frame_markdown, read_table
from experiments.studies.validity import gates as g

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
        tables[name] = read_table(path, "--update", empty_ok=True)
        if len(tables[name]) and "preset" not in tables[name]:
            raise ValueError(f"--update {directory}: {name}.csv has no preset column")
    seeds = sorted(set(tables["policies"].get("seed", pd.Series(dtype=int))))
    if seeds and seeds != sorted(settings.seeds):
        raise ValueError(
            f"--update {directory}: its report was measured on seeds {seeds}, this run on {sorted(settings.seeds)}"
        )
    commands_path = directory / "commands.csv"
    if commands_path.is_file():
        commands = read_table(commands_path, "--update")
        if not {"command", "presets", "minutes"} <= set(commands.columns):
            raise ValueError(f"--update {directory}: {commands_path} lacks command, presets or minutes")
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
    dest: Path | None = None,
) -> Path:
    """report.md of the report in `out`, written into `dest` (default `out`: a staging folder of it)."""
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
        lines += ["## Drift: stale-state over true-state oracle", "", frame_markdown(d, ".3f"), ""]
    if len(tables["history"]):
        h = tables["history"].groupby(["preset", "agent", "history_len"], sort=False).return_mean.mean().unstack()
        lines += ["## History ablation (mean return)", "", frame_markdown(h, ".1f"), ""]
    (dest or out).joinpath("report.md").write_text("\n".join(lines))
    return out / "report.md"


def validity_report(
    settings: g.ValiditySettings, out: str | Path | None = None, update: str | Path | None = None, command: str = ""
) -> tuple[list[g.Gate], Path]:
    """Measure the tables of `settings`, evaluate the gates and write the report: into `out` (default
    runs/validity/<time>), or with `update` merged into the report already in that folder (the presets
    measured now replace theirs). Returns (gates, report.md); bad settings or folders are a ValueError
    before any measuring."""
    if update and out:
        raise ValueError("--update DIR writes into DIR: give --update or --out, not both")
    if update:
        out, previous, commands = read_previous(update, settings)
    else:
        out = writable_dir(out or Path("runs") / "validity" / time.strftime("%Y%m%d-%H%M%S"), "--out")
        previous, commands = None, pd.DataFrame(columns=["command", "presets", "minutes"])
    started = time.perf_counter()
    tables = dict(
        policies=g.measure_policies(settings),
        drift=g.measure_drift(settings),
        history=g.measure_history(settings, out) if settings.history_agents else pd.DataFrame(),
    )
    if previous is not None:  # read again: an update that finished meanwhile keeps its rows
        out, previous, commands = read_previous(update, settings)
        tables = merge_tables(previous, tables, settings)
    measured = " ".join(settings.presets)
    if settings.history_agents:
        measured += f" (history: {' '.join(settings.history_agents)} on {' '.join(settings.history_presets)})"
    now = dict(command=command, presets=measured, minutes=(time.perf_counter() - started) / 60)
    commands = pd.concat([commands, pd.DataFrame([now])], ignore_index=True)
    # Relative to the repository, the earlier commands too: the report is committed under docs/.
    commands["command"] = commands.command.map(repo_relative)
    gates = g.evaluate_gates(tables["policies"], tables["drift"], tables["history"])
    with staged(out) as stage:  # the tables, gates, commands and report.md: all of them or none
        for name, table in tables.items():
            table.to_csv(stage / f"{name}.csv", index=False)
        pd.DataFrame([vars(x) for x in gates]).to_csv(stage / "gates.csv", index=False)
        commands.to_csv(stage / "commands.csv", index=False)
        report = write_report(settings, tables, gates, out, commands, dest=stage)
    return gates, report
