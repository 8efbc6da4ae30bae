"""What a drift stress test measures, as pure functions of evaluation results.

The grid holds one row per (agent, seed, family, magnitude) evaluation; family "none" is the
training regime itself (no added drift). Timelines hold the harness's per-step curves for the
same evaluations. Every evaluation of a seed uses the same users and the same simulator noise
(common random numbers), so a drifted run and the no-drift run of the same policy are identical
until the drift acts: their ratio isolates the drift's effect from the within-session trend.

Temporal mode (lifetime scenarios) measures the same way on the harness's per-day curves
(by_day): watch per active user on each calendar day relative to the same agent and seed's
no-drift curve, binned by weeks since the training days ended, and the recovery, in days, from
the shock dated shock_day.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from experiments.core.harness import concentration
from experiments.core.stats import mean_interval
from experiments.studies.stress.settings import NO_DRIFT, StressSettings

MIN_ACTIVE_SHARE = 0.1  # per-step curves stop where fewer than this share of users are still in session
# Recovery in days (temporal mode): the pre-shock level over a week (a whole weekly season), a
# 3-day trailing mean, and a fall counts when it starts within two weeks of the shock.
DAY_RECOVERY = dict(pre_window=7, window=3, horizon=14)
KEYS = ["agent", "seed", "family", "magnitude"]  # one evaluation


def with_stand_ins(frame: pd.DataFrame, stand_ins) -> pd.DataFrame:
    """`frame` plus, for each (family, magnitude) of `stand_ins` (regimes equal to the one without
    added drift, not evaluated again), a copy of its no-drift rows labelled with them; column
    stand_in marks the copies."""
    calm = frame[frame.family == NO_DRIFT]
    copies = [calm.assign(family=f, magnitude=float(m)) for f, m in stand_ins]
    return pd.concat([frame.assign(stand_in=False), *(c.assign(stand_in=True) for c in copies)], ignore_index=True)


def add_relative(grid: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    """Add relative_return (return / the same agent and seed's no-drift return), regret and
    regret_increase (regret - no-drift regret) against the reference's return on each regime.

    grid: rows agent, seed, family, magnitude, return_mean; reference: family, magnitude,
    return_mean (one row per regime), or None (regret columns are then NaN).
    """
    grid = grid.copy()
    base = grid[grid.family == NO_DRIFT].set_index(["agent", "seed"]).return_mean
    if base.index.duplicated().any():
        raise ValueError("the grid holds more than one no-drift evaluation per agent and seed")
    keys = pd.MultiIndex.from_frame(grid[["agent", "seed"]])
    missing = set(keys) - set(base.index)
    if missing:
        raise ValueError(f"no no-drift evaluation for (agent, seed) {sorted(missing)[0]}")
    grid["relative_return"] = grid.return_mean.to_numpy() / base.reindex(keys).to_numpy()
    if reference is None:
        grid["regret"] = grid["regret_increase"] = np.nan
        return grid
    ref = reference.set_index(["family", "magnitude"]).return_mean
    grid["regret"] = ref.reindex(pd.MultiIndex.from_frame(grid[["family", "magnitude"]])).to_numpy() - grid.return_mean
    base_regret = grid[grid.family == NO_DRIFT].set_index(["agent", "seed"]).regret
    grid["regret_increase"] = grid.regret.to_numpy() - base_regret.reindex(keys).to_numpy()
    return grid


def robustness_table(
    grid: pd.DataFrame, metrics=("relative_return", "regret", "regret_increase", "return_mean")
) -> pd.DataFrame:
    """One row per agent x family x magnitude: each metric's mean over seeds and 95% t interval.

    The no-drift evaluation is shared by every family at magnitude 0 when the grid has no
    explicit magnitude-0 row for that family.
    """
    rows = []
    families = sorted(set(grid.family) - {NO_DRIFT})
    for agent, g in grid.groupby("agent", sort=False):
        for family in families:
            f = g[g.family == family]
            if not (f.magnitude == 0).any():
                f = pd.concat([g[g.family == NO_DRIFT].assign(family=family, magnitude=0.0), f])
            for magnitude, m in f.groupby("magnitude"):
                rows.append(
                    dict(
                        agent=agent,
                        family=family,
                        magnitude=float(magnitude),
                        seeds=int(m.seed.nunique()),
                        **_mean_ci(m, metrics),
                    )
                )
    return pd.DataFrame(rows)


def _mean_ci(frame: pd.DataFrame, metrics) -> dict[str, float]:
    """metric, metric_lo, metric_hi: the mean over rows (seeds) and its 95% t interval (experiments/core/stats.py)."""
    out = {}
    for metric in metrics:
        values = frame[metric].to_numpy(dtype=float)
        lo, hi = mean_interval(values)
        out.update(
            {
                metric: float(np.nanmean(values)) if np.isfinite(values).any() else np.nan,
                f"{metric}_lo": lo,
                f"{metric}_hi": hi,
            }
        )
    return out


def degradation(table: pd.DataFrame) -> pd.DataFrame:
    """Per agent and family: relative return at the largest magnitude, the least-squares slope of
    relative return against magnitude, and whether it falls at every step of the sweep."""
    rows = []
    for (agent, family), g in table.groupby(["agent", "family"], sort=False):
        g = g.sort_values("magnitude")
        x, y = g.magnitude.to_numpy(), g.relative_return.to_numpy()
        slope = float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else np.nan
        rows.append(
            dict(
                agent=agent,
                family=family,
                max_magnitude=float(x[-1]),
                relative_at_max=float(y[-1]),
                slope=slope,
                monotone_decrease=bool(len(y) > 1 and np.all(np.diff(y) < 0)),
            )
        )
    return pd.DataFrame(rows)


def least_degraded(deg: pd.DataFrame, families=None) -> tuple[str, float]:
    """The agent whose mean relative return at the largest magnitude (over `families`) is highest."""
    d = deg if families is None else deg[deg.family.isin(families)]
    score = d.groupby("agent").relative_at_max.mean()
    return str(score.idxmax()), float(score.max())


# ------------------------------------------------------------------ recovery
def smooth(curve: np.ndarray, window: int) -> np.ndarray:
    """Trailing moving average (NaN-aware) over `window` steps; the first steps average what exists."""
    x = np.asarray(curve, dtype=np.float64)
    out = np.full_like(x, np.nan)
    for t in range(len(x)):  # curves are ~100 steps long
        seg = x[max(0, t - window + 1) : t + 1]
        if np.isfinite(seg).any():
            out[t] = np.nanmean(seg)
    return out


def recovery_time(
    curve: np.ndarray, shock_step: int, level: float = 0.9, pre_window: int = 5, window: int = 3, horizon: int = 10
) -> float:
    """Steps after `shock_step` until the smoothed `curve` regains `level` x its pre-shock level.

    curve [steps] (e.g. engagement normalised by the no-shock run); the pre-shock level is the
    mean of the `pre_window` steps before the shock. Only a fall within `horizon` steps of the
    shock counts as the shock's (later dips are noise as sessions thin out). 0 when the curve
    does not fall below the level; NaN when it falls and does not regain it within the curve.
    """
    x = np.asarray(curve, dtype=np.float64)
    if not 0 < shock_step < len(x):
        raise ValueError(f"shock_step must be inside the curve (1..{len(x) - 1}), got {shock_step}")
    pre = np.nanmean(x[max(0, shock_step - pre_window) : shock_step])
    threshold = level * pre
    post = smooth(x, window)[shock_step:]
    below = np.flatnonzero(post[:horizon] < threshold)
    if below.size == 0:
        return 0.0
    back = np.flatnonzero(post[below[0] :] >= threshold)
    return float(below[0] + back[0]) if back.size else float("nan")


def reaction_time(gap: np.ndarray, shock_step: int, window: int = 3, horizon: int = 10) -> float:
    """Steps after the shock until a drop in `gap` has been half made up.

    gap [steps]: the served items' fit in the shocked run minus the no-shock run (0 before the
    shock). The trough is the lowest smoothed value within `horizon` steps of the shock; the
    reaction time counts steps from the shock to the first later step back above half the
    trough. 0 when nothing dropped; NaN when the gap never closes by half.
    """
    x = smooth(gap, window)[shock_step:]
    if not np.isfinite(x).any():
        return float("nan")
    trough_at = int(np.nanargmin(x[:horizon]))
    trough = x[trough_at]
    if trough >= 0:
        return 0.0
    back = np.flatnonzero(x[trough_at:] >= 0.5 * trough)
    return float(trough_at + back[0]) if back.size else float("nan")


def per_user_watch(timeline: pd.DataFrame, n_users: int) -> np.ndarray:
    """[steps] minutes watched per evaluation user at each step (users who left count as 0)."""
    return (timeline.engagement.fillna(0.0) * timeline.active_users / n_users).to_numpy()


def _aligned(a: pd.DataFrame, b: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    n = max(len(a), len(b))
    out = []
    for t in (a, b):
        x = np.full(n, np.nan)
        x[: len(t)] = t[column].to_numpy(dtype=float)
        out.append(x)
    return out[0], out[1]


def shock_curves(shocked: pd.DataFrame, calm: pd.DataFrame, n_users: int) -> pd.DataFrame:
    """Per step: engagement of both runs, their ratio, and the fit gap (shocked - calm).

    Steps where fewer than MIN_ACTIVE_SHARE of the users are still active in either run are NaN.
    """
    eng_s, eng_c = _aligned(shocked, calm, "engagement")
    fit_s, fit_c = _aligned(shocked, calm, "fit")
    act_s, act_c = _aligned(shocked, calm, "active_users")
    keep = (np.nan_to_num(act_s) >= MIN_ACTIVE_SHARE * n_users) & (np.nan_to_num(act_c) >= MIN_ACTIVE_SHARE * n_users)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(keep & (eng_c > 0), eng_s / eng_c, np.nan)
    return pd.DataFrame(
        dict(
            step=np.arange(len(ratio)),
            engagement=np.where(keep, eng_s, np.nan),
            engagement_no_shock=np.where(keep, eng_c, np.nan),
            engagement_ratio=ratio,
            fit_gap=np.where(keep, fit_s - fit_c, np.nan),
        )
    )


def recovery_metrics(
    curves: pd.DataFrame,
    shocked: pd.DataFrame,
    reference_shocked: pd.DataFrame | None,
    shock_step: int,
    n_users: int,
    level: float = 0.9,
) -> dict[str, float]:
    """Recovery of one agent and seed from the shock, given its `shock_curves` and shocked timeline.

    recovery_time: steps until engagement (normalised by the same policy's no-shock run) regains
    `level` of its pre-shock level; recovery_time_95: the same for 95% (a shallow dip shows here);
    reaction_time: steps until the served items' fit has made up half its drop (the fit at the
    shock step is measured before the shift, so the clock starts one step later); dip: the lowest
    normalised engagement in the 5 steps after the shock; post_shock_return and post_shock_regret
    (vs the reference on the shocked regime): minutes watched per user from the shock on.
    """
    watch = per_user_watch(shocked, n_users)[shock_step:].sum()
    ratio = curves.engagement_ratio.to_numpy()
    out = dict(
        recovery_time=recovery_time(ratio, shock_step, level),
        recovery_time_95=recovery_time(ratio, shock_step, 0.95),
        reaction_time=reaction_time(curves.fit_gap.to_numpy(), shock_step + 1),
        dip=float(np.nanmin(ratio[shock_step : shock_step + 5])),
        post_shock_return=float(watch),
        post_shock_regret=np.nan,
    )
    if reference_shocked is not None:
        out["post_shock_regret"] = float(per_user_watch(reference_shocked, n_users)[shock_step:].sum() - watch)
    return out


def recovery_table(
    recovery: pd.DataFrame,
    metrics=("recovery_time", "recovery_time_95", "reaction_time", "dip", "post_shock_return", "post_shock_regret"),
) -> pd.DataFrame:
    """Per agent: mean over seeds and 95% t interval of each recovery metric (NaN seeds of the
    first metric, the recovery time, are counted in `not_recovered`)."""
    rows = []
    for agent, g in recovery.groupby("agent", sort=False):
        rows.append(
            dict(
                agent=agent,
                seeds=int(g.seed.nunique()),
                not_recovered=int(g[metrics[0]].isna().sum()),
                **_mean_ci(g, metrics),
            )
        )
    return pd.DataFrame(rows)


def homogenisation_curve(timeline: pd.DataFrame, n_users: int) -> np.ndarray:
    """[steps] concentration (Herfindahl index) of the population's consumption at each step;
    NaN where fewer than MIN_ACTIVE_SHARE of the users remain."""
    shares = timeline[[c for c in timeline.columns if c.startswith("share_")]].to_numpy()
    h = concentration(shares)
    return np.where(timeline.active_users.to_numpy() >= MIN_ACTIVE_SHARE * n_users, h, np.nan)


# ------------------------------------------------------------------ temporal mode
def relative_by_day(by_day: pd.DataFrame, train_days: float, n_users: int) -> pd.DataFrame:
    """Each evaluation's watch per active user per calendar day relative to the same agent and
    seed's no-drift curve.

    by_day: rows agent, seed, family, magnitude, day, active_users, watch_per_active_user (the
    harness's per-day curves, family "none" among them). Returns one row per input row: the keys,
    day, since (days since training: day - train_days), week (whole weeks since training; -1
    before train_days), active_users, watch, watch_no_drift and relative (NaN on days when fewer
    than MIN_ACTIVE_SHARE of the users were active in either run).
    """
    calm = by_day[by_day.family == NO_DRIFT].set_index(["agent", "seed", "day"])
    if calm.index.duplicated().any():
        raise ValueError("the per-day curves hold more than one no-drift evaluation per agent and seed")
    keys = pd.MultiIndex.from_frame(by_day[["agent", "seed", "day"]])
    missing = set(keys.droplevel("day")) - set(calm.index.droplevel("day"))
    if missing:
        raise ValueError(f"no no-drift evaluation for (agent, seed) {sorted(missing)[0]}")
    base = calm.reindex(keys)
    enough = MIN_ACTIVE_SHARE * n_users
    keep = (by_day.active_users.to_numpy() >= enough) & (base.active_users.to_numpy() >= enough)
    watch, watch_calm = by_day.watch_per_active_user.to_numpy(float), base.watch_per_active_user.to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(keep & (watch_calm > 0), watch / watch_calm, np.nan)
    since = by_day.day.to_numpy(float) - train_days
    return by_day[KEYS + ["day"]].assign(
        since=since,
        week=np.where(since >= 0, np.floor(since / 7.0), -1).astype(int),
        active_users=by_day.active_users.to_numpy(),
        watch=watch,
        watch_no_drift=watch_calm,
        relative=relative,
    )


def weekly_degradation(relative: pd.DataFrame) -> pd.DataFrame:
    """One row per agent x family x magnitude x week since training (days 0-6, 7-13, ... after
    train_days; family "none" left out): each seed's mean relative watch over the week's days
    (`relative_by_day`), then the mean over seeds and its 95% t interval (relative, relative_lo,
    relative_hi), with seeds, days_from and days_to (days since training the week spans)."""
    r = relative[(relative.week >= 0) & (relative.family != NO_DRIFT)]
    groups = ["agent", "family", "magnitude", "week"]
    per_seed = r.groupby(groups + ["seed"], sort=False).agg(relative=("relative", "mean"), last=("since", "max"))
    rows = []
    for (agent, family, magnitude, week), g in per_seed.reset_index().groupby(groups, sort=False):
        rows.append(
            dict(
                agent=agent,
                family=family,
                magnitude=float(magnitude),
                week=int(week),
                days_from=7 * int(week),
                days_to=int(g["last"].max()),
                seeds=int(g.seed.nunique()),
                **_mean_ci(g, ("relative",)),
            )
        )
    return pd.DataFrame(rows)


def daily_watch(by_day: pd.DataFrame, n_users: int) -> np.ndarray:
    """[days] minutes watched per evaluation user on each day (users away or gone count as 0)."""
    return (by_day.watch_per_active_user.fillna(0.0) * by_day.active_users / n_users).to_numpy()


def dated_recovery_metrics(
    curve: pd.DataFrame,
    reference_shocked: pd.DataFrame | None,
    shock_day: float,
    n_users: int,
    level: float = 0.9,
) -> dict[str, float]:
    """Recovery of one agent and seed from the shock dated `shock_day`, in days.

    curve: its shocked evaluation's `relative_by_day` rows (day, active_users, watch, relative),
    one per day from 0; reference_shocked: the reference's by_day curve on the shocked regime.
    recovery_days (recovery_days_95): days after the shock until the relative watch (3-day trailing
    mean) regains `level` (95%) of its level over the week before (`recovery_time` in days,
    DAY_RECOVERY); dip: the lowest relative watch in the week from the shock; post_shock_return
    and post_shock_regret (vs the reference): minutes per user watched from the shock day on.
    """
    curve = curve.sort_values("day")
    day0 = int(np.floor(shock_day))
    ratio = curve.relative.to_numpy(float)
    after = curve.day.to_numpy() >= day0
    watch = daily_watch(curve.rename(columns={"watch": "watch_per_active_user"}), n_users)[after].sum()
    out = dict(
        recovery_days=recovery_time(ratio, day0, level, **DAY_RECOVERY),
        recovery_days_95=recovery_time(ratio, day0, 0.95, **DAY_RECOVERY),
        dip=float(np.nanmin(ratio[day0 : day0 + 7])) if np.isfinite(ratio[day0 : day0 + 7]).any() else np.nan,
        post_shock_return=float(watch),
        post_shock_regret=np.nan,
    )
    if reference_shocked is not None:
        ref = reference_shocked.sort_values("day")
        out["post_shock_regret"] = float(daily_watch(ref, n_users)[ref.day.to_numpy() >= day0].sum() - watch)
    return out


DATED_RECOVERY = ("recovery_days", "recovery_days_95", "dip", "post_shock_return", "post_shock_regret")


# ---------------------------------------------------------------- the whole grid
@dataclass
class StressResult:
    grid: pd.DataFrame  # one row per agent x seed x regime evaluated
    table: pd.DataFrame  # robustness: agent x family x magnitude, mean and CI over seeds
    degradation: pd.DataFrame  # per agent x family: slope, relative return at the largest magnitude
    recovery: pd.DataFrame  # per agent x seed
    recovery_summary: pd.DataFrame
    curves: pd.DataFrame  # per agent x seed x step (temporal: day) around the shock
    timelines: pd.DataFrame  # step mode: the per-step curves
    by_day: pd.DataFrame = field(default_factory=pd.DataFrame)  # temporal: relative_by_day of every evaluation
    weekly: pd.DataFrame = field(default_factory=pd.DataFrame)  # temporal: weekly_degradation


def analyse(settings: StressSettings, results: list[dict[str, Any]]) -> StressResult:
    raw = pd.DataFrame([r for res in results for r in res["rows"]])
    full = with_stand_ins(raw, settings.stand_ins())
    ref_rows = full[full.agent == settings.reference]
    full = add_relative(full, ref_rows[["family", "magnitude", "return_mean"]])
    grid = full[~full.stand_in].drop(columns="stand_in").reset_index(drop=True)
    table = robustness_table(full)
    deg = degradation(table)
    if settings.temporal:
        return _analyse_days(settings, results, grid, table, deg)
    timelines = pd.concat([res["timelines"] for res in results], ignore_index=True)
    n = settings.eval_users
    timelines["homogenisation"] = np.nan
    for _, g in timelines.groupby(KEYS, sort=False):
        timelines.loc[g.index, "homogenisation"] = homogenisation_curve(g, n)
    recovery, curves = [], []
    if "shock" in settings.families and settings.recovery_magnitude > 0:

        def timeline(agent, seed, family, magnitude):
            return timelines[
                (timelines.agent == agent)
                & (timelines.seed == seed)
                & (timelines.family == family)
                & (timelines.magnitude == magnitude)
            ].sort_values("step")

        ref_shocked = timeline(settings.reference, 0, "shock", settings.recovery_magnitude)
        for (agent, seed), _ in grid.groupby(["agent", "seed"], sort=False):
            shocked = timeline(agent, seed, "shock", settings.recovery_magnitude)
            calm = timeline(agent, seed, NO_DRIFT, 0.0)
            c = shock_curves(shocked, calm, n)
            metrics = recovery_metrics(c, shocked, ref_shocked, settings.shock_step, n, settings.recovery_level)
            recovery.append(dict(agent=agent, seed=seed, **metrics))
            curves.append(c.assign(agent=agent, seed=seed))
    recovery = pd.DataFrame(recovery)
    return StressResult(
        grid=grid,
        table=table,
        degradation=deg,
        recovery=recovery,
        recovery_summary=recovery_table(recovery) if len(recovery) else pd.DataFrame(),
        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        timelines=timelines,
    )


def _analyse_days(
    settings: StressSettings, results: list[dict[str, Any]], grid: pd.DataFrame, table: pd.DataFrame, deg: pd.DataFrame
) -> StressResult:
    """The temporal mode's curves: relative watch by day and week since training, recovery in days."""
    n = settings.eval_users
    by_day = pd.concat([res["by_day"] for res in results], ignore_index=True)
    by_day = by_day[by_day.day < settings.serve_days]  # the harness's last row: the horizon's own day
    rel = relative_by_day(with_stand_ins(by_day, settings.stand_ins()), settings.train_days, n)
    recovery, curves = [], []
    shocked = rel[(rel.family == "shock") & (rel.magnitude == settings.recovery_magnitude)]
    if "shock" in settings.families and settings.recovery_magnitude > 0 and len(shocked):
        ref = by_day[
            (by_day.agent == settings.reference)
            & (by_day.family == "shock")
            & (by_day.magnitude == settings.recovery_magnitude)
            & (by_day.seed == by_day[by_day.agent == settings.reference].seed.min())
        ]
        for (agent, seed), c in shocked.groupby(["agent", "seed"], sort=False):
            metrics = dated_recovery_metrics(c, ref, settings.shock_day, n, settings.recovery_level)
            recovery.append(dict(agent=agent, seed=seed, **metrics))
            curves.append(c[["agent", "seed", "day", "since", "relative", "watch", "watch_no_drift"]])
    recovery = pd.DataFrame(recovery)
    return StressResult(
        grid=grid,
        table=table,
        degradation=deg,
        recovery=recovery,
        recovery_summary=recovery_table(recovery, DATED_RECOVERY) if len(recovery) else pd.DataFrame(),
        curves=pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(),
        timelines=pd.DataFrame(),
        by_day=rel,
        weekly=weekly_degradation(rel),
    )
