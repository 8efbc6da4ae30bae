"""The comparison of runs across seeds (experiments/compare.py): one row per agent and configuration with
the mean and 95% t interval over seeds of each metric, regret against a reference agent, learning curves,
lifetime scenarios' per-day curves and, from a day T on, what agents deployed on day T are compared by.

  text, written = compare([Path("runs")], Path("reports/compare"), reference="oracle-session")

What is averaged is what the table says: a row is one agent in one configuration (a non-default
configuration carries a label, `ppo [3fa2c1]`, and is never pooled), over distinct seeds (a seed run
twice counts once: its latest finished run). Runs that did not finish and unreadable results are
skipped, each with a line that names it (experiments.core.records reads every run). The outputs are
written all or nothing.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.core.records import find_runs
from experiments.core.rundirs import staged, writable_dir
from experiments.core.settings import changed_dynamics, config_label
from experiments.core.stats import (
    improvement_interval,
    iqm,
    mean_interval,
    probability_of_improvement,
    stratified_bootstrap,
)
from experiments.core.tables import markdown_table

METRICS = (
    "return_mean",
    "regret",
    "ctr",
    "session_length",
    "satisfaction_end",
    "consumption_entropy",
    "coverage",
    "homogenisation",
    "homogenisation_trend",
    # Lifetime scenarios (absent elsewhere): calendar-time outcomes.
    "sessions_mean",
    "churn_rate",
    "retention_d1",
    "retention_d7",
    "retention_d30",
    "watch_per_active_day",
)
AFTER_DAYS = (7, 14, 21)  # --from-day T: retention given day T is read T + 7, 14 and 21 days on
BY_DAY_FILE = "eval_by_day.csv"  # written by lifetime runs (experiments.core.tracking.RunLogger.curves)
MIN_SHADED_SEEDS = 3  # learning curves shade their interval from this many seeds on
BY_DAY_PANELS = (("retention", "share of users still active"), ("watch_per_active_user", "minutes per active user"))


def _skip(path: Path, why: str) -> None:
    print(f"skipped {path}: {why}", file=sys.stderr)


def _config(record: dict) -> str:
    """The configuration label of a run's record (run.json)."""
    label = config_label(record)
    # A run of a preset as it was before a change to it is another configuration, never pooled.
    return f"{label} earlier dynamics".strip() if changed_dynamics(record) else label


def load_rows(roots: list[Path]) -> pd.DataFrame:
    """Every row of results.csv (final, train, baseline ...) of the latest finished run per agent,
    configuration and seed, the agent labelled with its configuration where it ran in several. Every run
    is read through the one loader (experiments.core.records): one that is unfinished, truncated or
    inconsistent (a NaN return included) is skipped with a line that names it, the file and why."""
    runs, refused = find_runs(roots, checkpoint=None, same_dynamics=False)
    for err in refused:
        print(f"skipped: {err}", file=sys.stderr)
    frames = [run.results.assign(config=_config(run.record), run_dir=str(run.run_dir)) for run in runs]
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["phase"])
    if not (rows.phase == "final").any():
        raise ValueError(f"no finished runs (results.csv with a final evaluation) under {', '.join(map(str, roots))}")
    # Where one agent ran in several configurations, each gets its label: never pooled.
    mixed = rows.groupby(["scenario", "agent"]).config.transform("nunique") > 1
    labelled = mixed & (rows.config != "")
    rows.loc[labelled, "agent"] = rows.agent[labelled].astype(str) + " [" + rows.config[labelled] + "]"
    # A seed run twice counts once: its latest run (run directories sort by time within a seed).
    latest = final_rows(rows).run_dir
    return rows[rows.run_dir.isin(latest)]


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per agent, configuration and seed: the final evaluation of its latest run."""
    final = rows[rows.phase == "final"]
    return final.sort_values("run_dir").drop_duplicates(["scenario", "agent", "seed"], keep="last")


def load_runs(roots: list[Path]) -> pd.DataFrame:
    """One row per agent, configuration and seed: the final evaluation of its latest finished run
    (:func:`load_rows`)."""
    return final_rows(load_rows(roots))


def add_regret(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    runs = runs.copy()
    ref = runs[runs.agent == reference].groupby("scenario").return_mean.mean()
    runs["regret"] = runs.scenario.map(ref) - runs.return_mean
    return runs


def summarise(runs: pd.DataFrame, metrics=METRICS) -> pd.DataFrame:
    """Long table: scenario, agent, metric, seeds, mean, ci_low, ci_high."""
    rows = []
    for (scenario, agent), g in runs.groupby(["scenario", "agent"], sort=True):
        for m in metrics:
            if m not in g or g[m].isna().all():
                continue
            rows.append(dict(scenario=scenario, agent=agent, metric=m, **over_seeds(g[m])))
    return pd.DataFrame(rows)


def over_seeds(values: pd.Series) -> dict[str, float]:
    """seeds (non-missing values), mean and 95% t interval (ci_low, ci_high) of one number per seed."""
    lo, hi = mean_interval(values.to_numpy())
    return dict(seeds=int(values.notna().sum()), mean=float(values.mean()), ci_low=lo, ci_high=hi)


def markdown(summary: pd.DataFrame, metrics=METRICS) -> str:
    out = []
    for scenario, g in summary.groupby("scenario", sort=True):
        shown = [m for m in metrics if m in set(g.metric)]
        agents = g[g.metric == "return_mean"].sort_values("mean", ascending=False).agent.tolist()
        cell = {
            (r.agent, r.metric): (
                f"{r.mean:.3g} [{r.ci_low:.3g}, {r.ci_high:.3g}]" if np.isfinite(r.ci_low) else f"{r.mean:.3g}"
            )
            for r in g.itertuples()
        }
        seeds = {r.agent: r.seeds for r in g[g.metric == "return_mean"].itertuples()}
        out.append(f"### {scenario}\n")
        rows = [[a, seeds[a], *(cell.get((a, m), "") for m in shown)] for a in agents]
        out.append(markdown_table(["agent", "seeds", *shown], rows))
        out.append("")
    out.append(
        "Mean over seeds [95% t interval]; return in minutes watched per episode "
        "(a session; a whole life on lifetime scenarios)."
    )
    if any("_given_d" in m for m in set(summary.metric)):
        out.append(
            "From each run's per-day curves: watch_from_d<T>, minutes per user watched on or after day T; "
            "retention_d<T+D>_given_d<T>, among the users still active on or after day T of their life, "
            "the share still active on or after day T + D."
        )
    return "\n".join(out)


def plot(summary: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ret = summary[summary.metric == "return_mean"]
    scenarios = sorted(ret.scenario.unique())
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios):
        g = ret[ret.scenario == scenario].sort_values("mean")
        lo = (g["mean"] - g.ci_low).fillna(0).clip(lower=0)
        hi = (g.ci_high - g["mean"]).fillna(0).clip(lower=0)
        # Oracles read the true user state: grey, to set them apart from deployable agents.
        colors = ["0.6" if a.startswith("oracle") else "tab:blue" for a in g.agent]
        ax.barh(g.agent, g["mean"], xerr=[lo, hi], color=colors, alpha=0.9, capsize=4)
        ax.set_title(scenario)
        ax.set_xlabel("minutes watched per episode\n(mean, 95% CI over seeds)")
    _save(fig, path)


def _save(fig, path: Path) -> Path:
    """Lay out, write and close a comparison figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def load_by_day(runs: pd.DataFrame) -> pd.DataFrame:
    """The per-day curves of the runs that have them: scenario, agent, seed, day and the curves."""
    frames = []
    for r in runs.itertuples():
        path = Path(r.run_dir) / BY_DAY_FILE
        if not path.is_file():
            continue
        try:
            curves = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
            _skip(path, "not a readable per-day table")
            continue
        if not {"day", *(c for c, _ in BY_DAY_PANELS)} <= set(curves.columns):
            _skip(path, "not a per-day table (columns missing)")
            continue
        frames.append(curves.assign(scenario=r.scenario, agent=r.agent, seed=r.seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def learning_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """The evaluations during training among results rows (:func:`load_rows`; the `train` rows, on validation
    users where a run keeps its best snapshot): scenario, agent, seed, evaluation (0, 1, ... in each run's
    order), env_steps and return_mean."""
    columns = ["scenario", "agent", "seed", "env_steps", "return_mean"]
    if "env_steps" not in rows:
        return pd.DataFrame(columns=[*columns, "evaluation"])
    train = rows[rows.phase == "train"].dropna(subset=["env_steps", "return_mean"])
    return train[columns].assign(evaluation=train.groupby(["scenario", "agent", "seed"]).cumcount())


def learning_summary(curves: pd.DataFrame) -> pd.DataFrame:
    """Per scenario, agent and evaluation index: env_steps (mean over seeds: evaluations fall a few steps
    apart), seeds, and the return's mean and 95% t interval over seeds."""
    rows = []
    for (scenario, agent, k), g in curves.groupby(["scenario", "agent", "evaluation"], sort=True):
        stats = over_seeds(g.return_mean)
        rows.append(dict(scenario=scenario, agent=agent, evaluation=k, env_steps=g.env_steps.mean(), **stats))
    return pd.DataFrame(rows)


def plot_learning(summary: pd.DataFrame, out: Path) -> list[Path]:
    """One PNG per scenario: each training agent's return at its evaluations during training against the env
    steps, mean and 95% interval over seeds (shaded from MIN_SHADED_SEEDS seeds on)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for scenario, g in summary.groupby("scenario", sort=True):
        fig, ax = plt.subplots(figsize=(7, 4))
        agents = sorted(g.agent.unique())
        palette = plt.get_cmap("tab20" if len(agents) > 10 else "tab10")
        for agent, a in g.groupby("agent", sort=True):
            (line,) = ax.plot(a.env_steps, a["mean"], "o-", ms=3, label=agent, color=palette(agents.index(agent)))
            if (a.seeds >= MIN_SHADED_SEEDS).all():  # two seeds' t interval is +-12.7 sd: it would hide the rest
                ax.fill_between(a.env_steps, a.ci_low, a.ci_high, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("env steps")
        ax.set_ylabel("return at evaluations during training\n(mean, 95% CI over seeds)")
        ax.set_title(f"{scenario}: learning curves")
        ax.legend(fontsize=7)
        paths.append(_save(fig, out / f"learning_{scenario}.png"))
    return paths


def from_day(curve: pd.DataFrame, return_mean: float, day: int, after_days: tuple[int, ...]) -> dict[str, float]:
    """What one run's per-day curves say from day T on (T = `day`), for agents deployed on day T:

    watch_from_d<T>: minutes per evaluation user watched on or after day T (0 for users gone
    before it; for a model serving from day T, the harness's return_served_mean): `return_mean`
    times the share of all minutes watched that were watched from day T on.
    retention_d<T+D>_given_d<T>, for each D in `after_days`: r(T + D) / r(T) from the retention
    curve r, the share of the users still there on day T who are still there D days later (exactly
    that share where every user is followed to day T + D: r counts only users followed that long,
    `experiments.core.harness.retention`). NaN where the curve stops before T + D or nobody was left.
    """
    c = curve.set_index("day")
    r, at_t = c.retention, float(c.retention.get(day, np.nan))
    minutes = c.watch_per_active_user * c.active_users if "active_users" in c else pd.Series(dtype=float)
    total, later = float(minutes.sum()), float(minutes[minutes.index >= day].sum())
    out = {f"watch_from_d{day}": return_mean * later / total if total > 0 else np.nan}
    for d in after_days:
        out[f"retention_d{day + d}_given_d{day}"] = float(r.get(day + d, np.nan)) / at_t if at_t > 0 else np.nan
    return out


def add_from_day(runs: pd.DataFrame, by_day: pd.DataFrame, day: int, after_days) -> tuple[pd.DataFrame, list[str]]:
    """`runs` with the `from_day` columns of each run that has per-day curves, and their names."""
    curves = dict(iter(by_day.groupby(["scenario", "agent", "seed"])))  # a GroupBy has .keys: not a mapping
    empty = pd.DataFrame(dict(day=[], retention=[], watch_per_active_user=[], active_users=[]))
    names = list(from_day(empty, 0.0, day, after_days))
    keys = [(r.scenario, r.agent, r.seed) for r in runs.itertuples()]
    values = [from_day(curves[k], m, day, after_days) if k in curves else {} for k, m in zip(keys, runs.return_mean)]
    return pd.concat([runs.reset_index(drop=True), pd.DataFrame(values, columns=names)], axis=1), names


def by_day_summary(by_day: pd.DataFrame) -> pd.DataFrame:
    """Each per-day curve over seeds: scenario, agent, day, curve, seeds, mean, ci_low, ci_high."""
    rows = []
    for (scenario, agent, day), g in by_day.groupby(["scenario", "agent", "day"], sort=True):
        for curve, _ in BY_DAY_PANELS:
            rows.append(dict(scenario=scenario, agent=agent, day=day, curve=curve, **over_seeds(g[curve])))
    return pd.DataFrame(rows)


def plot_by_day(summary: pd.DataFrame, out: Path) -> list[Path]:
    """One PNG per scenario: retention and watch time per active user against the day, per agent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for scenario, g in summary.groupby("scenario", sort=True):
        fig, axes = plt.subplots(1, len(BY_DAY_PANELS), figsize=(6 * len(BY_DAY_PANELS), 4), squeeze=False)
        for ax, (curve, label) in zip(axes[0], BY_DAY_PANELS):
            agents = sorted(g.agent.unique())
            palette = plt.get_cmap("tab20" if len(agents) > 10 else "tab10")  # one colour per agent
            for agent, a in g[g.curve == curve].groupby("agent", sort=True):
                style = "--" if str(agent).startswith("oracle") else "-"  # oracles read the true state
                (line,) = ax.plot(a.day, a["mean"], style, label=agent, color=palette(agents.index(agent)))
                if a.ci_low.notna().any():
                    ax.fill_between(a.day, a.ci_low, a.ci_high, color=line.get_color(), alpha=0.15)
            ax.set_xlabel("days since the first visit")
            ax.set_ylabel(label)
            ax.set_title(f"{scenario}: {curve.replace('_', ' ')}")
        axes[0][0].legend(fontsize=7)
        paths.append(_save(fig, out / f"by_day_{scenario}.png"))
    return paths


def robust(runs: pd.DataFrame) -> pd.DataFrame:
    """The return as RL papers report it (experiments.core.stats, rliable's estimators), per scenario: each
    agent's interquartile mean over its seeds with its 95% stratified bootstrap interval, ranked by it, and
    P(improvement): the probability that a run of the agent beats a run of the agent ranked next below
    (ties half), with its bootstrap interval. One row per scenario and agent: scenario, agent, seeds, iqm,
    iqm_low, iqm_high, over (the agent below; "" for the last), p_improvement, p_low, p_high. One seed
    gives no interval (NaN)."""
    rows = []
    for scenario, g in runs.groupby("scenario", sort=True):
        scores = {
            a: s.to_numpy(dtype=np.float64) for a, s in g.dropna(subset=["return_mean"]).groupby("agent").return_mean
        }
        ranked = sorted(scores, key=lambda a: (-iqm(scores[a]), a))
        for i, agent in enumerate(ranked):
            x = scores[agent]
            point, low, high = stratified_bootstrap([x]) if len(x) > 1 else (iqm(x), np.nan, np.nan)
            row = dict(scenario=scenario, agent=agent, seeds=len(x), iqm=point, iqm_low=low, iqm_high=high)
            below = ranked[i + 1] if i + 1 < len(ranked) else ""
            p = (np.nan, np.nan, np.nan)
            if below and min(len(x), len(scores[below])) > 1:
                p = improvement_interval([x], [scores[below]])
            elif below:  # a single seed on either side: the probability, no interval
                p = (probability_of_improvement([x], [scores[below]]), np.nan, np.nan)
            rows.append(dict(row, over=below, p_improvement=p[0], p_low=p[1], p_high=p[2]))
    return pd.DataFrame(rows)


def robust_markdown(table: pd.DataFrame) -> str:
    out = []
    span = lambda point, low, high: f"{point:.3g} [{low:.3g}, {high:.3g}]" if np.isfinite(low) else f"{point:.3g}"  # noqa: E731
    for scenario, g in table.groupby("scenario", sort=False):
        out.append(f"### {scenario}: IQM and probability of improvement\n")
        rows = [
            [
                r.agent,
                r.seeds,
                span(r.iqm, r.iqm_low, r.iqm_high),
                r.over,
                span(r.p_improvement, r.p_low, r.p_high) if r.over else "",
            ]
            for r in g.itertuples()
        ]
        out.append(markdown_table(["agent", "seeds", "return IQM", "over", "P(improvement)"], rows))
        out.append("")
    out.append(
        "Interquartile mean of the return over seeds [95% stratified bootstrap interval]; P(improvement): the "
        "probability that a run of the agent scores above a run of the agent ranked next (ties count half) "
        "[95% bootstrap interval] (Agarwal et al. 2021, rliable's estimators)."
    )
    return "\n".join(out)


def compare(
    roots: list[Path],
    out: Path,
    reference: str = "oracle-lookahead",
    day: int | None = None,
    after_days: list[int] | None = None,
) -> tuple[str, list[Path]]:
    """Read the finished runs under `roots` and write comparison.md, comparison.csv, robust.csv
    (:func:`robust`), return.png, for runs that evaluated during training learning.csv and
    learning_<scenario>.png (:func:`learning_summary`), and, for lifetime runs, by_day.csv and
    by_day_<scenario>.png into `out`.
    With `day` T (--from-day), the columns of `from_day` too, read `after_days` after T (default
    AFTER_DAYS). Returns (the markdown, the files written). Bad arguments, an unwritable `out` or no
    finished runs are a ValueError before any writing."""
    if day is not None and day < 0:
        raise ValueError(f"--from-day must be a day >= 0, got {day}")
    if after_days is not None and day is None:
        raise ValueError("--after-days reads retention given a day: it needs --from-day T")
    after = AFTER_DAYS if after_days is None else tuple(sorted(set(after_days)))
    if min(after) < 1:
        raise ValueError(f"--after-days must be days >= 1, got {' '.join(map(str, after_days))}")
    writable_dir(out, "--out")
    rows = load_rows(roots)
    runs = add_regret(final_rows(rows), reference)
    by_day = load_by_day(runs)
    if day is not None and not len(by_day):
        raise ValueError("--from-day needs lifetime runs with per-day curves (eval_by_day.csv)")
    if day is not None and day > by_day.day.max():
        raise ValueError(f"--from-day {day} is past the runs' last day ({by_day.day.max()})")
    metrics = METRICS
    if day is not None:
        runs, names = add_from_day(runs, by_day, day, after)
        metrics = (*METRICS, *names)
    summary = summarise(runs, metrics)
    ranked = robust(runs)
    learning = learning_rows(rows)
    text = markdown(summary, metrics) + "\n\n" + robust_markdown(ranked)
    with staged(out) as stage:  # all of the outputs, or none of them
        summary.to_csv(stage / "comparison.csv", index=False)
        ranked.to_csv(stage / "robust.csv", index=False)
        (stage / "comparison.md").write_text(text + "\n")
        plot(summary, stage / "return.png")
        names = ["comparison.md", "comparison.csv", "robust.csv", "return.png"]
        if len(by_day):
            curves = by_day_summary(by_day)
            curves.to_csv(stage / "by_day.csv", index=False)
            names += ["by_day.csv", *(p.name for p in plot_by_day(curves, stage))]
        if len(learning):
            curves = learning_summary(learning)
            curves.to_csv(stage / "learning.csv", index=False)
            names += ["learning.csv", *(p.name for p in plot_learning(curves, stage))]
    return text, [out / name for name in names]
