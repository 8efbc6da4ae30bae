"""The stress report: markdown tables, figures, TensorBoard curves and report.md, written from the
jobs' raw evaluations (so --report-only can redo them), and the whole test in one call."""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.registry import parse_variant, retrain_days
from experiments.core.commands import repo_relative
from experiments.core.rundirs import read_json, staged
from experiments.core.tables import markdown_table
from experiments.core.tracking import RunLogger
from experiments.studies.stress import analysis as sa
from experiments.studies.stress import plots
from experiments.studies.stress.analysis import StressResult, analyse
from experiments.studies.stress.settings import StressSettings


def _cell(row: Any, metric: str, digits: int = 3) -> str:
    mean, lo, hi = getattr(row, metric), getattr(row, f"{metric}_lo"), getattr(row, f"{metric}_hi")
    if not np.isfinite(mean):
        return "-"
    if np.isfinite(lo):
        return f"{mean:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}]"
    return f"{mean:.{digits}g}"


def robustness_markdown(table: pd.DataFrame, metric: str) -> str:
    """One markdown table per family: agents x magnitudes, `metric` mean [95% CI over seeds]."""
    out = []
    for family, g in table.groupby("family", sort=False):
        mags = sorted(g.magnitude.unique())
        rows = []
        for agent, a in g.groupby("agent", sort=False):
            by = {r.magnitude: r for r in a.itertuples()}
            rows.append([agent, *(_cell(by[m], metric) if m in by else "" for m in mags)])
        out += [f"**{family}**\n", markdown_table(["agent", *(f"m={m:g}" for m in mags)], rows), ""]
    return "\n".join(out)


RECOVERY_COLUMNS = [
    ("recovery_time", "recovery time (steps)"),
    ("recovery_time_95", "to 95% (steps)"),
    ("reaction_time", "reaction time (steps)"),
    ("dip", "lowest engagement ratio"),
    ("post_shock_return", "post-shock return (min)"),
    ("post_shock_regret", "post-shock regret (min)"),
]
DATED_RECOVERY_COLUMNS = [
    ("recovery_days", "recovery (days)"),
    ("recovery_days_95", "to 95% (days)"),
    ("dip", "lowest relative watch (week after)"),
    ("post_shock_return", "post-shock watch (min per user)"),
    ("post_shock_regret", "post-shock regret (min per user)"),
]


def cadence(agent: str) -> str:
    """How an agent refits, for the temporal tables: every D days, never (a supervised agent's
    plain variant), or - (agents that do not refit)."""
    days = retrain_days(agent)
    if days is not None:
        return f"every {days:g} d"
    spec, retrains = parse_variant(agent)
    return "never" if spec.retrains and not retrains else "-"


def recovery_markdown(summary: pd.DataFrame) -> str:
    """The recovery summary as a markdown table (in days, with each agent's refit cadence, when temporal)."""
    dated = "recovery_days" in summary
    cols = DATED_RECOVERY_COLUMNS if dated else RECOVERY_COLUMNS
    extra = ["cadence"] if dated else []
    header = ["agent", *extra, "seeds", *(c[1] for c in cols), "not recovered"]
    rows = [
        [r.agent, *(cadence(r.agent) for _ in extra), r.seeds, *(_cell(r, c) for c, _ in cols), r.not_recovered]
        for r in summary.itertuples()
    ]
    return markdown_table(header, rows)


def weekly_markdown(weekly: pd.DataFrame) -> str:
    """One markdown table per family at its largest magnitude: agents x weeks since training,
    relative watch mean [95% CI over seeds]."""
    out = []
    for family, g in weekly.groupby("family", sort=False):
        mag = g.magnitude.max()
        g = g[g.magnitude == mag]
        weeks = sorted(g.week.unique())
        spans = {w: g[g.week == w] for w in weeks}
        heads = [f"days {7 * w}-{int(spans[w].days_to.max())}" for w in weeks]
        rows = []
        for agent, a in g.groupby("agent", sort=False):
            by = {r.week: r for r in a.itertuples()}
            rows.append([agent, cadence(agent), *(_cell(by[w], "relative") if w in by else "" for w in weeks)])
        out += [f"**{family} x{mag:g}**\n", markdown_table(["agent", "cadence", *heads], rows), ""]
    return "\n".join(out)


def make_plots(settings: StressSettings, res: StressResult, out: Path) -> dict[str, Path]:
    paths = dict(robustness=plots.robustness_curves(res.table, out / "robustness.png", settings.reference))
    if settings.temporal:
        paths["degradation"] = plots.degradation_by_day(res.by_day, res.weekly, out / "degradation_by_day.png")
        if len(res.curves):
            paths["recovery"] = plots.recovery_curves(
                res.curves,
                settings.shock_day,
                settings.recovery_level,
                out / "recovery.png",
                x="day",
                ratio="relative",
                unit="days",
                ratio_label="watch per active user / same policy without shock",
            )
        return paths
    if len(res.curves):
        paths["recovery"] = plots.recovery_curves(
            res.curves, settings.shock_step, settings.recovery_level, out / "recovery.png"
        )
    agent = _showcase_agent(settings, res)
    tl = res.timelines[(res.timelines.agent == agent) & (res.timelines.seed == res.timelines.seed.min())]
    panels = {"no drift": tl[tl.family == sa.NO_DRIFT]}
    for family in settings.families:
        f = tl[tl.family == family]
        if len(f):
            panels[f"{family} x{f.magnitude.max():g}"] = f[f.magnitude == f.magnitude.max()]
    paths["topic_shares"] = plots.topic_shares(
        panels,
        settings.eval_users,
        out / "topic_shares.png",
        f"population's consumption by topic under {agent} (seed {int(tl.seed.min())}), largest magnitudes",
    )
    paths["homogenisation"] = plots.homogenisation(res.timelines, out / "homogenisation.png")
    return paths


def _showcase_agent(settings: StressSettings, res: StressResult) -> str:
    """The agent whose topic shares are drawn: the first stressed one."""
    agents = [a for a in dict.fromkeys(res.grid.agent) if a != settings.reference]
    return agents[0] if agents else settings.reference


def log_tensorboard(settings: StressSettings, res: StressResult, out: Path) -> None:
    """The report's curves as TensorBoard scalars, one run per agent under tb/.

    robustness/<family>/<metric> at step = magnitude x 100; recovery/* and homogenisation/<family>
    at the episode step; topic_shares/<regime>/topic_k for the showcased agent. Temporal mode:
    degradation/<family> (relative watch at the family's largest magnitude, mean over seeds) at
    step = days since training and recovery/relative_watch at step = calendar day.
    """
    for agent, g in res.table.groupby("agent", sort=False):
        logger = RunLogger(out / "tb" / agent)
        for r in g.itertuples():
            logger.scalars(
                f"robustness/{r.family}",
                dict(relative_return=r.relative_return, regret=r.regret, return_mean=r.return_mean),
                int(round(r.magnitude * 100)),
            )
        if settings.temporal:
            _log_days(logger, res, agent)
            logger.close()
            continue
        if len(res.curves):
            c = res.curves[res.curves.agent == agent].groupby("step")[["engagement_ratio", "fit_gap"]].mean()
            for step, r in c.iterrows():
                logger.scalars("recovery", dict(engagement_ratio=r.engagement_ratio, fit_gap=r.fit_gap), int(step))
        tl = res.timelines[res.timelines.agent == agent]
        for family, f in tl.groupby("family", sort=False):
            h = f[f.magnitude == f.magnitude.max()].groupby("step").homogenisation.mean()
            for step, v in h.items():
                logger.scalars("homogenisation", {family: v}, int(step))
        if agent == _showcase_agent(settings, res):
            shares = [c for c in tl.columns if c.startswith("share_")]
            first = tl[tl.seed == tl.seed.min()]
            for family, f in first.groupby("family", sort=False):
                enough = f.active_users >= sa.MIN_ACTIVE_SHARE * settings.eval_users
                f = f[(f.magnitude == f.magnitude.max()) & enough]
                for r in f.itertuples():
                    logger.scalars(
                        f"topic_shares/{family}", {f"topic_{c[6:]}": getattr(r, c) for c in shares}, int(r.step)
                    )
        logger.close()


def _log_days(logger: RunLogger, res: StressResult, agent: str) -> None:
    """Temporal mode's curves of one agent (see log_tensorboard)."""
    rel = res.by_day[(res.by_day.agent == agent) & (res.by_day.week >= 0) & (res.by_day.family != sa.NO_DRIFT)]
    for family, f in rel.groupby("family", sort=False):
        daily = f[f.magnitude == f.magnitude.max()].groupby("since").relative.mean()
        for since, v in daily.items():
            logger.scalars("degradation", {family: v}, int(since))
    if len(res.curves):
        for day, v in res.curves[res.curves.agent == agent].groupby("day").relative.mean().items():
            logger.scalars("recovery", dict(relative_watch=v), int(day))


_RAW_FILES = (
    "jobs.pkl (the raw evaluations: `--report-only` redoes this report from them), evaluations/ (the same, "
    "one file per agent, seed and regime, saved as each finished: the same command run again into this "
    "directory resumes from them); "
)


def write_report(
    settings: StressSettings,
    res: StressResult,
    out: Path,
    paths: dict[str, Path],
    command: str,
    seconds: float,
    resumed: bool = False,
    dest: Path | None = None,
) -> Path:
    """report.md of the stress test in `out`, written into `dest` (default `out`: a staging folder of it)."""
    agents = [a for a in dict.fromkeys(res.grid.agent) if a != settings.reference]
    deg = res.degradation[res.degradation.agent.isin(agents)]
    lines = [
        f"# Drift stress test: trained on `{settings.train_scenario}`"
        + (f", days [0, {settings.train_days:g}), served to day {settings.serve_days:g}" if settings.temporal else ""),
        "",
        f"`{repo_relative(command)}`  ({seconds / 60:.1f} min"
        + (" in its last invocation, which resumed an interrupted one and reused its saved work)" if resumed else ")"),
        "",
        f"Agents: {', '.join(agents)}; seeds {', '.join(map(str, sorted(res.grid.seed.unique())))}; "
        f"{settings.eval_users} evaluation users per regime (the same users and simulator noise for every "
        f"agent and regime); reference for regret: `{settings.reference}` (reads the true user state). "
        + (
            _temporal_intro(settings)
            if settings.temporal
            else "Magnitude 0 is the training regime; 1 is each family's default strength."
        ),
        "",
    ]
    sizes = _sizes(settings)
    if sizes:
        lines += [sizes, ""]
    lines += ["## Which agent degrades least", ""]
    if len(deg):
        best, score = sa.least_degraded(deg)
        lines.append(
            f"Averaged over families, **{best}** keeps the most of its own no-drift return at the "
            f"largest magnitude ({score:.1%}). Per family (relative return at the largest magnitude; "
            f"slope per unit of magnitude; whether it falls at every step of the sweep):"
        )
        rows = []
        for family, g in deg.groupby("family", sort=False):
            by = {r.agent: r for r in g.itertuples()}
            cells = [
                f"{by[a].relative_at_max:.3f} ({by[a].slope:+.3f}{', falls' if by[a].monotone_decrease else ''})"
                for a in agents
            ]
            rows.append([family, *cells, sa.least_degraded(g)[0]])
        lines += ["", markdown_table(["family", *agents, "degrades least"], rows)]
        falls = deg.groupby("family", sort=False).monotone_decrease.all()
        lines += [
            "",
            "Families in which every agent's relative return falls at each step of the magnitude sweep: "
            f"{', '.join(falls.index[falls]) or 'none'}; in which it does not: "
            f"{', '.join(falls.index[~falls]) or 'none'}.",
            "",
        ]
    lines += [
        "## Robustness",
        "",
        f"![robustness curves]({paths['robustness'].name})",
        "",
        "Return relative to the agent's own no-drift return, mean [95% t interval over seeds]:",
        "",
        robustness_markdown(res.table, "relative_return"),
        f"Regret (minutes per {'life' if settings.temporal else 'session'}) against `{settings.reference}` "
        "on the same regime:",
        "",
        robustness_markdown(res.table, "regret"),
    ]
    lines += (
        _temporal_sections(settings, res, out, paths)
        if settings.temporal
        else _step_sections(settings, res, out, paths)
    )
    path = (dest or out) / "report.md"
    path.write_text("\n".join(lines))
    return out / "report.md"


def _step_sections(settings: StressSettings, res: StressResult, out: Path, paths: dict[str, Path]) -> list[str]:
    """Step mode's report sections: shock recovery in steps, the population over time, the files."""
    lines: list[str] = []
    if len(res.recovery_summary):
        lines += [
            "## Shock recovery",
            "",
            f"At episode step {settings.shock_step} every user's interests move "
            f"{min(1.0, settings.shock_strength * settings.recovery_magnitude):.0%} of the way toward another "
            f"taste community (shock magnitude {settings.recovery_magnitude:g}). Each policy's engagement is "
            "divided by its own engagement on the same users without the shock (common random numbers "
            "make the two runs identical before it), which removes the within-session trend. A reference "
            "that plans with copies of the true simulator foresees the shock, so its runs can differ "
            "before it.",
            "",
            f"![recovery curves]({paths['recovery'].name})",
            "",
            recovery_markdown(res.recovery_summary),
            "",
            f"- **recovery time**: steps after the shock until the engagement ratio (3-step trailing mean) "
            f"is back to {settings.recovery_level:.0%} of its pre-shock level (0: it never fell below; "
            "a fall counts when it starts within 10 steps of the shock); *to 95%*: the same for 95%.",
            "- **reaction time**: steps until the true fit of the served items to the users' new interests "
            "has made up half of its drop (how long the recommender takes to follow the shift).",
            "- **post-shock regret**: minutes per user watched from the shock on, reference minus agent.",
            "",
        ]
    lines += [
        "## Population over time",
        "",
        f"![topic shares]({paths['topic_shares'].name})",
        "",
        "Shares of the population's consumption by topic at each step (steps with at least "
        f"{sa.MIN_ACTIVE_SHARE:.0%} of users still in session).",
        "",
        f"![homogenisation]({paths['homogenisation'].name})",
        "",
        "Concentration (Herfindahl index over topics) of what the population watched at each step; "
        "higher means everyone watches the same topics.",
        "",
        "## Files",
        "",
        "grid.csv (every evaluation), robustness.csv, recovery.csv (per seed), "
        "recovery_summary.csv, recovery_curves.csv, timelines.csv, settings.json, "
        + _RAW_FILES
        + f"TensorBoard: `tensorboard --logdir {out / 'tb'}`.",
        "",
    ]
    return lines


def _temporal_intro(settings: StressSettings) -> str:
    return (
        f"Temporal mode: every agent learns from days [0, {settings.train_days:g}) of `{settings.train_scenario}` "
        f"(the preset's own drift is the no-drift regime) and serves lives of {settings.serve_days:g} days: "
        f"supervised agents are fitted on the logging policy's logs of those days and serve from day "
        f"{settings.train_days:g} (the logging policy serves before it), NAME-retrain-<D>d variants refit every "
        f"D days from then on; agents that train in the simulator train on lives of {settings.train_days:g} days; "
        "the others just serve (online learners after one pass over training users). Magnitude 0 turns a "
        "family off and 1 is its default strength (the preset's own, so the no-drift run stands in); "
        f"the shock family adds one sudden shift of every user's interests on day {settings.shock_day:g}, "
        f"{min(1.0, settings.shock_strength):.0%} of the way toward another taste community at magnitude 1 "
        "(0: none added). The other families act on whole lives, from day 0 (warm-up days included)."
    )


def _sizes(settings: StressSettings) -> str:
    """A line naming the scenario, model and agent settings given (reduced sizes say so here)."""
    parts = []
    if settings.scenario_overrides:
        parts.append(f"scenario overrides `{json.dumps(settings.scenario_overrides)}`")
    if settings.model:
        parts.append(f"model `{json.dumps(dict(settings.model))}`")
    if settings.algo:
        parts.append(f"agent settings (algo) `{json.dumps({k: dict(v) for k, v in settings.algo.items()})}`")
    if not parts:
        return ""
    return "Settings given (anything not named is the default size): " + "; ".join(parts) + "."


def _temporal_sections(settings: StressSettings, res: StressResult, out: Path, paths: dict[str, Path]) -> list[str]:
    """Temporal mode's report sections: degradation by week since training, recovery in days, the files."""
    lines = [
        "## Degradation against days since training",
        "",
        f"![relative watch by day]({paths['degradation'].name})",
        "",
        "Watch per active user on each day relative to the same agent and seed's run without the added "
        f"drift (days when fewer than {sa.MIN_ACTIVE_SHARE:.0%} of the users were active are left out), "
        f"averaged over the days of each week since training ended (day {settings.train_days:g}); "
        "mean [95% t interval over seeds], each family at its largest magnitude (every magnitude: "
        "degradation_by_week.csv):",
        "",
        weekly_markdown(res.weekly),
    ]
    if len(res.recovery_summary):
        level = settings.recovery_level
        lines += [
            "## Recovery after the dated shock",
            "",
            f"On day {settings.shock_day:g} every user's interests move "
            f"{min(1.0, settings.shock_strength * settings.recovery_magnitude):.0%} of the way toward another "
            f"taste community (shock magnitude {settings.recovery_magnitude:g}). Each policy's watch per active "
            "user is divided by its own on the same users without the shock. Common random numbers make each "
            "user's life the same in both runs until the shock, except for what users share (social influence, "
            "the catalog's moving popularity): users' clocks diverge, so one already past the shock day sways "
            "others still before it, and the daily ratio moves before the shock day too (hence a pre-shock "
            "level over a whole week and a 3-day mean).",
            "",
            f"![recovery curves]({paths['recovery'].name})",
            "",
            recovery_markdown(res.recovery_summary),
            "",
            f"- **recovery (days)**: days after the shock until the relative watch (3-day trailing mean) is back "
            f"to {level:.0%} of its level over the week before (0: it never fell below; a fall counts when it "
            "starts within 14 days of the shock; not recovered: still below at the horizon); "
            "*to 95%*: the same for 95%.",
            "- **post-shock watch / regret**: minutes per evaluation user watched from the shock day on; "
            "the reference's minus the agent's.",
            "",
        ]
    lines += [
        "## Files",
        "",
        "grid.csv (every evaluation), robustness.csv, by_day.csv (relative watch per agent, seed, regime "
        "and day), degradation_by_week.csv, recovery.csv (per seed), recovery_summary.csv, recovery_curves.csv, "
        "settings.json, " + _RAW_FILES + f"TensorBoard: `tensorboard --logdir {out / 'tb'}`.",
        "",
    ]
    return lines


def write_outputs(settings: StressSettings, results: list[dict[str, Any]], out: Path) -> StressResult:
    """Tables, plots, TensorBoard events and report.md from the jobs' evaluations, all or nothing (a redone
    report replaces the TensorBoard events, not adds to them)."""
    res = analyse(settings, results)
    meta = read_json(out / "command.json", "stress command record") if (out / "command.json").is_file() else {}
    with staged(out, folders=("tb",)) as stage:
        res.grid.to_csv(stage / "grid.csv", index=False)
        res.table.to_csv(stage / "robustness.csv", index=False)
        if settings.temporal:
            res.by_day.to_csv(stage / "by_day.csv", index=False)
            res.weekly.to_csv(stage / "degradation_by_week.csv", index=False)
        else:
            res.timelines.to_csv(stage / "timelines.csv", index=False)
        (stage / "robustness.md").write_text(robustness_markdown(res.table, "relative_return"))
        if len(res.recovery):
            res.recovery.to_csv(stage / "recovery.csv", index=False)
            res.recovery_summary.to_csv(stage / "recovery_summary.csv", index=False)
            res.curves.to_csv(stage / "recovery_curves.csv", index=False)
        paths = make_plots(settings, res, stage)
        log_tensorboard(settings, res, stage)
        write_report(
            settings,
            res,
            out,
            paths,
            meta.get("command", "experiments/stress.py"),
            meta.get("seconds", 0.0),
            meta.get("resumed", False),
            dest=stage,
        )
    return res


def load_outputs(out: Path) -> tuple[StressSettings, list[dict[str, Any]]]:
    """The settings and raw evaluations of a finished stress test, for --report-only."""
    settings_path, jobs_path = out / "settings.json", out / "jobs.pkl"
    for path in (settings_path, jobs_path):
        if not path.is_file():
            raise ValueError(f"--report-only: no {path.name} in {out} (is it a finished stress test?)")
    saved = read_json(settings_path, "stress test's settings")
    for key in ("agents", "families", "magnitudes", "seeds", "loads", "retrain_days"):
        if saved.get(key) is not None:
            saved[key] = tuple(saved[key])
    unknown = sorted(set(saved) - {f.name for f in dataclasses.fields(StressSettings)})
    if unknown:
        raise ValueError(f"--report-only: {settings_path} has an unknown setting '{unknown[0]}'")
    try:
        jobs = pd.read_pickle(jobs_path)
    except (OSError, EOFError, ValueError, pickle.UnpicklingError, AttributeError, ImportError) as err:
        raise ValueError(f"--report-only: {jobs_path} is unreadable ({type(err).__name__}): truncated?") from None
    if not isinstance(jobs, list):
        raise ValueError(f"--report-only: {jobs_path} holds a {type(jobs).__name__}, not a stress test's evaluations")
    return StressSettings(**saved), jobs
