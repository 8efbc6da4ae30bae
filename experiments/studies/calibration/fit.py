"""Calibration of the `movielens` preset to MovieLens-100k and the Open Bandit Dataset sample.

One set of statistics (`statistics`) is computed the same way on real events (ml-100k ratings) and
simulated ones (clicks of the preset's users, shown uniformly random candidates of the env's
retriever as a list of SERVE_SLATE, of which they pick one or none), from an event table of
(user, item, day): the item popularity Gini and head share, the genre (topic) shares of
consumption, the user activity distribution, the repeat-consumption rate, the inter-event gaps
(a new session after `SESSION_GAP_DAYS` without an event, as on both sides) and how concentrated
and how clustered users' tastes are. The click rate per slot comes from the OBD sample (its
`random` campaign: items served uniformly at random, so a slot's click rate measures the position
effect alone) and from simulated slates of 3 random candidates.

Fitting (`fit`), in two kinds:
- closed forms on the real data: item count, genres as topics (each genre's mean share of an
  item's normalised genre vector as `topic_weights`; `topic_concentration` solved so the simulated
  mixtures are as concentrated as the real genre vectors, by mean Herfindahl index), item quality
  (a Beta by moments of items' mean ratings on [0, 1], corrected for the simulator's halving of
  clickbait quality), the return gap's Weibull shape (maximum likelihood on gaps between
  sessions), churn per session (censoring-guarded), the number of taste communities (the elbow
  of k-means on users' genre profiles), and the position decay (maximum likelihood of the OBD
  clicks per slot, `utility -= decay * log(1 + position)`, with a likelihood-ratio 95% interval);
- simulated moments, one parameter at a time by bisection, two rounds: the session budget to the
  events per session, the return rate to the median gap between sessions, the popularity
  exponent to the head share, churn (from its closed form's start: the simulator's churn also
  rises with dissatisfaction) to the sessions per user, the community strength to the share of
  taste variance the communities explain, and the budget's spread to the spread of events per
  user. The activity spread (`lifetime.activity_sigma`) keeps its default: in a trial fit the
  spread of events per user fell as it rose (churn, not the gap, ends lives), so it cannot be
  bisected to it.

The fitted numbers (derived statistics only, never the data) are the overrides of the `movielens`
preset, in `envs/movielens.json`; `python experiments/calibrate.py --update-preset` rewrites it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.config import MOVIELENS_FILE, make_scenario
from envs.core import RecommenderCore
from experiments.core.harness import concentration, shares
from experiments.core.rundirs import staged, writable_dir, write_text_whole
from experiments.core.tables import markdown_table
from simulator.params import check_int, merge_overrides
from simulator.realdata import MovieLens, load_movielens, load_obd

SESSION_GAP_DAYS = 1.0 / 24.0  # a new session after an hour without an event (real and simulated alike)
HEAD_FRACTION = 0.1  # head share: the events on the most popular 10% of items
MIN_USER_EVENTS = 20  # ml-100k keeps users with at least 20 ratings; simulated users are filtered alike
CHURN_GUARD_DAYS = 30.0  # a user whose last event is this close to the data's end may still come back
SLATE_SLOTS = 3  # OBD shows 3 slots
SERVE_SLATE = 10  # simulated users browse a list of 10 random retrieved candidates and pick one or none
# The `movielens` preset's fixed part (what the data does not fit): a lifetime world over the data's
# span with satiation and novelty (cognitive) and seasons on calendar time; no social drift or shocks.
BASE = {
    "lifetime": {"enabled": True, "horizon_days": 215.0, "first_visit_days": 215.0, "min_gap_days": SESSION_GAP_DAYS},
    "seasonal": {"enabled": True, "unit": "day", "period": 365.25, "amplitude": 0.6, "weekly_amplitude": 0.2},
    "cognitive": {"enabled": True},
    "social": {"enabled": False},
    "shock": {"enabled": False, "events": []},
    "env": {"history_len": 128, "max_steps": 20000},
}


@dataclass(frozen=True)
class CalibrationSettings:
    """How hard `fit` and `simulate` work. sim_users: simulated users per run (real: 943);
    rounds: passes over the simulated-moment parameters; bisection_steps: per parameter and pass."""

    sim_users: int = 600
    rounds: int = 2
    bisection_steps: int = 7
    seed: int = 0
    max_steps: int = 20000  # simulated steps at most per run (lives end before, by churn or the horizon)

    def __post_init__(self) -> None:
        o = "calibration"
        check_int(o, "sim_users", self.sim_users, 8, 1_000_000)
        check_int(o, "rounds", self.rounds, 0, 20)
        check_int(o, "bisection_steps", self.bisection_steps, 1, 50)
        check_int(o, "seed", self.seed, 0)
        check_int(o, "max_steps", self.max_steps, 10)


SMOKE = CalibrationSettings(sim_users=64, rounds=1, bisection_steps=2, max_steps=2000)


# --------------------------------------------------------------------------- events and statistics


def real_events(ml: MovieLens) -> pd.DataFrame:
    """ml-100k as an event table: user, item, day (days since the first rating), time-ordered per user."""
    d = ml.interactions
    day = (d["timestamp"].to_numpy() - d["timestamp"].min()) / 86400.0
    frame = pd.DataFrame(dict(user=d["user"].to_numpy(), item=d["item"].to_numpy(), day=day))
    return frame.sort_values(["user", "day"], kind="stable").reset_index(drop=True)


def genre_topics(genres: np.ndarray) -> np.ndarray:
    """[I, G] genre indicators as topic mixtures: each item's genres share its weight equally
    (an item without a genre: zeros)."""
    g = genres.astype(np.float64)
    return g / np.maximum(g.sum(axis=1, keepdims=True), 1.0)


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of non-negative counts [I] (0: all equal; near 1: all on one)."""
    x = np.sort(np.asarray(counts, np.float64))
    n, total = x.size, x.sum()
    if n == 0 or total == 0:
        return 0.0
    return float((2.0 * np.arange(1, n + 1) - n - 1) @ x / (n * total))


def head_share(counts: np.ndarray, fraction: float = HEAD_FRACTION) -> float:
    """Share of all events on the most popular `fraction` of items (counts [I])."""
    x = np.sort(np.asarray(counts, np.float64))[::-1]
    k = max(1, int(round(fraction * x.size)))
    return float(x[:k].sum() / max(x.sum(), 1.0))


def sessions(events: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(session index per event [M], gap in days before each event [M], NaN at a user's first) of a
    time-ordered event table: a new session after more than SESSION_GAP_DAYS without an event."""
    user, day = events["user"].to_numpy(), events["day"].to_numpy()
    same = np.r_[False, user[1:] == user[:-1]]
    gap = np.where(same, np.r_[np.nan, np.diff(day)], np.nan)
    start = ~same | (gap > SESSION_GAP_DAYS)
    return np.cumsum(start) - 1, gap


def return_gaps(session: np.ndarray, gap: np.ndarray) -> np.ndarray:
    """The days between two sessions of a user: the gaps [M] (of `sessions`) before each session's
    first event, a user's first session left out."""
    return gap[np.r_[True, session[1:] != session[:-1]] & ~np.isnan(gap)]


def user_profiles(events: pd.DataFrame, item_topics: np.ndarray) -> np.ndarray:
    """[U, T] each user's share of consumption per topic (users in order of id, rows sum to 1)."""
    users, inverse = np.unique(events["user"].to_numpy(), return_inverse=True)
    prof = np.zeros((users.size, item_topics.shape[1]))
    np.add.at(prof, inverse, item_topics[events["item"].to_numpy()])
    return shares(prof)


def kmeans_r2(x: np.ndarray, k: int, seed: int = 0, restarts: int = 4, iters: int = 60) -> float:
    """Share of the variance of the rows of x [U, D] explained by k clusters (Lloyd's k-means,
    k-means++ starts, the best of `restarts`)."""
    rng = np.random.default_rng(seed)
    total = float(((x - x.mean(axis=0)) ** 2).sum())
    if total == 0 or k <= 1:
        return 0.0
    best = math.inf
    for _ in range(restarts):
        centres = x[rng.integers(len(x))][None, :]
        for _ in range(1, k):  # k-means++ seeding
            d2 = ((x[:, None, :] - centres[None]) ** 2).sum(-1).min(axis=1)
            centres = np.vstack([centres, x[rng.choice(len(x), p=d2 / d2.sum())]])
        for _ in range(iters):
            label = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(axis=1)
            new = np.array([x[label == j].mean(axis=0) if np.any(label == j) else centres[j] for j in range(k)])
            if np.allclose(new, centres):
                break
            centres = new
        within = float(((x - centres[label]) ** 2).sum())
        best = min(best, within)
    return 1.0 - best / total


def statistics(events: pd.DataFrame, item_topics: np.ndarray, n_communities: int, seed: int = 0) -> dict[str, Any]:
    """The compared statistics of a time-ordered event table (user, item, day) over items with topic
    mixtures item_topics [I, T]. Users with fewer than MIN_USER_EVENTS events are left out first
    (ml-100k's own filter). Scalars, plus `genre_shares` [T] (consumption share per topic) and the
    `activity` quantiles."""
    counts = events.groupby("user")["item"].transform("size").to_numpy()
    ev = events[counts >= MIN_USER_EVENTS].reset_index(drop=True)
    if ev.empty:
        raise ValueError(f"no user has {MIN_USER_EVENTS} events or more: nothing to compare")
    session, gap = sessions(ev)
    between = return_gaps(session, gap)
    within = gap[np.r_[False, session[1:] == session[:-1]]]
    per_user = np.bincount(np.unique(ev["user"].to_numpy(), return_inverse=True)[1])
    sessions_per_user = ev.assign(s=session).groupby("user")["s"].nunique().to_numpy()
    item_counts = np.bincount(ev["item"].to_numpy(), minlength=item_topics.shape[0])
    repeat = ev.duplicated(["user", "item"]).mean()
    topics = item_topics[ev["item"].to_numpy()].sum(axis=0)
    profiles = user_profiles(ev, item_topics)
    q = lambda a, p: float(np.percentile(a, p)) if a.size else float("nan")  # noqa: E731
    return {
        "users": int(per_user.size),
        "events": int(len(ev)),
        "item_gini": gini(item_counts),
        "head_share": head_share(item_counts),
        "genre_shares": topics / topics.sum(),
        "events_per_user_p10": q(per_user, 10),
        "events_per_user_p50": q(per_user, 50),
        "events_per_user_p90": q(per_user, 90),
        "events_per_user_logsd": float(np.log(per_user).std()),
        "sessions_per_user": float(sessions_per_user.mean()),
        "events_per_session": float(len(ev) / (session.max() + 1)),
        "repeat_rate": float(repeat),
        "within_gap_min_p50": q(within * 1440.0, 50),
        "between_gap_days_p50": q(between, 50),
        "between_gap_days_p90": q(between, 90),
        "interest_hhi": float(concentration(profiles).mean()),
        "community_r2": kmeans_r2(profiles, n_communities, seed),
    }


# --------------------------------------------------------------------------- closed-form fits


def topic_concentration_for(weights: np.ndarray, target_hhi: float) -> float:
    """The concentration c whose Dirichlet(T c w) mixtures (weights w [T] summing to 1) have mean
    Herfindahl index `target_hhi`: E[sum p_i^2] = sum a_i (a_i + 1) / (A (A + 1)), a = T c w, A = T c;
    solved by bisection in log space over [0.01, 100]."""
    w = np.asarray(weights, np.float64) / np.sum(weights)
    t = w.size

    def hhi(c: float) -> float:
        a = t * c * w
        big = a.sum()
        return float((a * (a + 1)).sum() / (big * (big + 1)))

    lo, hi = math.log(0.01), math.log(100.0)  # hhi falls as c grows
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if hhi(math.exp(mid)) > target_hhi else (lo, mid)
    return math.exp(0.5 * (lo + hi))


def quality_beta(mean_ratings: np.ndarray, clickbait_fraction: float) -> tuple[float, float]:
    """(alpha, beta) of the simulator's quality Beta from items' mean ratings on [0, 1], by moments.
    The simulator halves the quality of a `clickbait_fraction` f of items, so the observed moments
    are E q = m (1 - f / 2) and E q^2 = s (1 - 3 f / 4) of the Beta's m = E, s = E[x^2]."""
    q = np.asarray(mean_ratings, np.float64)
    f = clickbait_fraction
    m = q.mean() / (1.0 - f / 2.0)
    s = (q**2).mean() / (1.0 - 0.75 * f)
    v = max(s - m * m, 1e-6)
    common = m * (1.0 - m) / v - 1.0
    if not 0 < m < 1 or common <= 0:
        raise ValueError(f"item mean ratings give no Beta (mean {m:.3f}, variance {v:.4f})")
    return float(m * common), float((1.0 - m) * common)


def weibull_fit(x: np.ndarray) -> tuple[float, float]:
    """(shape k, mean) of a Weibull by maximum likelihood on positive samples x: k solves
    sum x^k ln x / sum x^k - 1/k = mean(ln x) (bisection), scale = mean(x^k)^(1/k)."""
    x = np.asarray(x, np.float64)
    x = x[x > 0]
    if x.size < 2:
        raise ValueError("a Weibull fit needs at least 2 positive gaps")
    z = x / x.max()  # scale-free for the shape equation
    lz = np.log(z)

    def g(k: float) -> float:
        zk = z**k
        return float((zk * lz).sum() / zk.sum() - 1.0 / k - lz.mean())

    lo, hi = 0.05, 20.0  # g rises with k
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
    k = 0.5 * (lo + hi)
    scale = float(x.max() * np.mean(z**k) ** (1.0 / k))
    return k, scale * math.gamma(1.0 + 1.0 / k)


def churn_per_session(events: pd.DataFrame) -> float:
    """Probability that a session is a user's last, from sessions that start at least CHURN_GUARD_DAYS
    before the data's end (a later last session may be followed by one the data does not see)."""
    session, _ = sessions(events)
    day = events["day"].to_numpy()
    end = day.max()
    starts = np.r_[True, session[1:] != session[:-1]]
    user = events["user"].to_numpy()
    last_of_user = np.r_[user[1:] != user[:-1], True]
    last_session = np.zeros(session.max() + 1, bool)
    last_session[session[last_of_user]] = True
    early = starts & (day <= end - CHURN_GUARD_DAYS)
    n = int(early.sum())
    if n == 0:
        raise ValueError("no session starts early enough to estimate churn")
    return float(last_session[session[early]].sum() / n)


def communities_elbow(profiles: np.ndarray, k_max: int = 8, gain: float = 0.03, seed: int = 0) -> tuple[int, list]:
    """The number of taste communities: the smallest k whose next cluster explains less than `gain`
    more of the variance of the users' genre profiles [U, G] (k-means); and the R^2 per k."""
    r2 = [kmeans_r2(profiles, k, seed) for k in range(1, k_max + 2)]
    for k in range(2, k_max + 1):
        if r2[k] - r2[k - 1] < gain:  # r2[k] is k + 1 clusters
            return k, r2
    return k_max, r2


def position_decay(obd: pd.DataFrame, slots: int = SLATE_SLOTS) -> dict[str, Any]:
    """Maximum likelihood of the position decay d in p(click at slot j) = exp(a - d log(1 + j)) on
    the OBD clicks per slot j (0 = top; Poisson likelihood, rare clicks), its likelihood-ratio 95%
    interval on the grid, and the click rate per slot. The simulator's parameter range is d >= 0."""
    per = obd.groupby("position")["click"].agg(["sum", "count"]).reindex(range(slots)).fillna(0)
    clicks, shows = per["sum"].to_numpy(np.float64), per["count"].to_numpy(np.float64)
    x = np.log1p(np.arange(slots))
    grid = np.linspace(-3.0, 3.0, 6001)

    def loglik(d: float) -> float:
        rate = shows * np.exp(-d * x)
        a = math.log(clicks.sum() / rate.sum())
        mu = rate * math.exp(a)
        return float((clicks * np.log(mu) - mu).sum())

    ll = np.array([loglik(d) for d in grid])
    best = int(ll.argmax())
    inside = grid[ll >= ll[best] - 1.92]  # chi2(1) 95% / 2
    return {
        "decay_mle": float(grid[best]),
        "decay_ci": (float(inside.min()), float(inside.max())),
        "decay": float(min(max(grid[best], 0.0), 100.0)),
        "click_rate": clicks / np.maximum(shows, 1),
        "shows": shows,
        "clicks": clicks,
    }


CLICKBAIT_FRACTION = 0.1  # not in the data (ratings carry no clickbait signal): a small share keeps the mechanism


def closed_form(ml: MovieLens, obd: pd.DataFrame, clickbait_fraction: float = CLICKBAIT_FRACTION) -> tuple[dict, dict]:
    """(overrides, notes): every parameter fitted in closed form from the real data, and the figures
    they came from. `clickbait_fraction` is chosen, not fitted: with the default 0.25 the halved
    clickbait qualities alone spread item quality more than ml-100k's mean ratings spread."""
    topics = genre_topics(ml.genres)
    has = ml.genres.any(axis=1)
    weights = topics[has].mean(axis=0)
    hhi = float((topics[has] ** 2).sum(axis=1).mean())
    conc = topic_concentration_for(weights, hhi)
    d = ml.interactions
    agg = d.groupby("item")["rating"].agg(["mean", "size"])
    rated = agg[agg["size"] >= 10]
    qa, qb = quality_beta((rated["mean"].to_numpy() - 1.0) / 4.0, clickbait_fraction)
    events = real_events(ml)
    session, gap = sessions(events)
    between = return_gaps(session, gap)
    shape, mean_gap = weibull_fit(between)
    churn = churn_per_session(events)
    profiles = user_profiles(events, topics)
    k, r2 = communities_elbow(profiles)
    pos = position_decay(obd)
    overrides = {
        "catalog": {
            "n_items": ml.n_items,
            "n_topics": len(ml.genre_names),
            "topic_weights": [round(float(w), 5) for w in weights],
            "topic_concentration": round(conc, 4),
            "quality_alpha": round(qa, 3),
            "quality_beta": round(qb, 3),
            "clickbait_fraction": clickbait_fraction,
        },
        "users": {"n_communities": int(k)},
        "lifetime": {"gap": "weibull", "gap_shape": round(shape, 3), "churn_base": round(churn, 4)},
        "response": {"position_decay": round(pos["decay"], 3)},
    }
    notes = {
        "item_genre_hhi": hhi,
        "items_rated_10": int(len(rated)),
        "between_gaps": int(between.size),
        "weibull_mean_days": mean_gap,
        "kmeans_r2": r2,
        "position": pos,
    }
    return overrides, notes


# --------------------------------------------------------------------------- simulation


def preset_overrides(fitted: Mapping[str, Any]) -> dict[str, Any]:
    """The whole `movielens` preset: the fixed BASE with the fitted sections on top."""
    return merge_overrides(BASE, fitted)


def simulate(
    fitted: Mapping[str, Any], n_users: int, seed: int = 0, max_steps: int = 20000, slate_size: int = SERVE_SLATE
) -> tuple[pd.DataFrame, np.ndarray, Any]:
    """Run `n_users` lives of the preset built from `fitted`, shown uniformly random slates of
    `slate_size` distinct candidates of the retriever, until every life ended or
    `max_steps`. Returns (events: user, item, day of each click, time-ordered per user;
    clicks per slot [slate_size]; the world's catalog)."""
    over = preset_overrides(fitted)
    if slate_size > 1:
        over = merge_overrides(over, {"env": {"slate_size": slate_size}})
    cfg = make_scenario("stationary", over)
    core = RecommenderCore(cfg, n_users, seed)
    rng = np.random.default_rng(seed + 1)
    c = cfg.env.num_candidates
    alive = np.ones(n_users, bool)
    users, items, days = [], [], []
    slot_clicks = np.zeros(slate_size)
    for _ in range(max_steps):
        slate = np.argsort(rng.random((n_users, c)), axis=1)[:, :slate_size]
        day = core.world.state.day.copy()
        result, _, truncated = core.step(slate)
        hit = alive & result.clicked
        users.append(np.flatnonzero(hit))
        items.append(result.item[hit])
        days.append(day[hit])
        slot_clicks += np.bincount(result.position[hit], minlength=slate_size)[:slate_size]
        alive &= ~(result.terminated | truncated)
        if not alive.any():
            break
    events = pd.DataFrame(dict(user=np.concatenate(users), item=np.concatenate(items), day=np.concatenate(days)))
    events = events.sort_values(["user", "day"], kind="stable").reset_index(drop=True)
    return events, slot_clicks, core.world.catalog


def simulated_statistics(fitted: Mapping[str, Any], settings: CalibrationSettings) -> dict[str, Any]:
    events, _, catalog = simulate(fitted, settings.sim_users, settings.seed, settings.max_steps)
    k = int(fitted.get("users", {}).get("n_communities", 4))
    return statistics(events, catalog.topics.astype(np.float64), k, settings.seed)


def _get(tree: Mapping[str, Any], path: str) -> Any:
    section, key = path.split(".")
    return tree.get(section, {}).get(key)


def _set(tree: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    section, key = path.split(".")
    return merge_overrides(tree, {section: {key: value}})


@dataclass(frozen=True)
class Moment:
    """A parameter fitted by simulation: `param` (section.field) in [lo, hi] (searched in log space
    when `log`), moved until the simulated `stat` meets the real one; `rises`: the statistic grows
    with the parameter."""

    param: str
    stat: str
    lo: float
    hi: float
    rises: bool
    log: bool = True
    integer: bool = False


MOMENTS = (
    Moment("users.budget_mean", "events_per_session", 10.0, 2000.0, rises=True),
    Moment("lifetime.return_rate", "between_gap_days_p50", 0.005, 20.0, rises=False),
    Moment("catalog.popularity_exponent", "head_share", 0.2, 3.0, rises=True, log=False),
    Moment("lifetime.churn_base", "sessions_per_user", 0.01, 0.9, rises=False),
    Moment("users.community_strength", "community_r2", 0.0, 1.0, rises=True, log=False),
    Moment("users.budget_std", "events_per_user_logsd", 0.0, 400.0, rises=True, log=False),
)


def fit_moments(
    fitted: dict[str, Any],
    real: Mapping[str, Any],
    settings: CalibrationSettings,
    progress: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Bisect each Moment's parameter in turn (`settings.rounds` passes), the others held at their
    current values. Returns the fitted overrides and one record per bisection step."""
    trail = []
    for r in range(settings.rounds):
        for m in MOMENTS:
            lo, hi = (math.log(m.lo), math.log(m.hi)) if m.log and m.lo > 0 else (m.lo, m.hi)
            for step in range(settings.bisection_steps):
                mid = 0.5 * (lo + hi)
                value = math.exp(mid) if m.log and m.lo > 0 else mid
                trial = _set(fitted, m.param, round(value, 4))
                stat = simulated_statistics(trial, settings)[m.stat]
                trail.append(dict(round=r, param=m.param, value=value, stat=m.stat, simulated=stat, real=real[m.stat]))
                if progress:
                    progress(f"round {r} {m.param}={value:.4g}: {m.stat} {stat:.4g} (real {real[m.stat]:.4g})")
                too_low = stat < real[m.stat]
                lo, hi = (mid, hi) if too_low == m.rises else (lo, mid)
                del step
            final = 0.5 * (lo + hi)
            fitted = _set(fitted, m.param, round(math.exp(final) if m.log and m.lo > 0 else final, 4))
    return fitted, trail


def fit(
    ml: MovieLens | None = None,
    obd: pd.DataFrame | None = None,
    settings: CalibrationSettings = CalibrationSettings(),
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fit the `movielens` preset from the real data (loaded from the installed packages when not
    given). Returns dict(overrides = the preset's fitted sections, notes, trail, real = the real
    statistics)."""
    ml = load_movielens() if ml is None else ml
    obd = load_obd("random") if obd is None else obd
    fitted, notes = closed_form(ml, obd)
    k = fitted["users"]["n_communities"]
    real = statistics(real_events(ml), genre_topics(ml.genres), k, settings.seed)
    fitted, trail = fit_moments(fitted, real, settings, progress)
    return dict(overrides=fitted, notes=notes, trail=trail, real=real)


def compare(
    fitted: Mapping[str, Any],
    ml: MovieLens,
    obd: pd.DataFrame,
    settings: CalibrationSettings,
    real: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Real against simulated, side by side: (scalar statistics, genre shares, click rate per slot).

    The simulation runs the fitted preset with a fresh seed (settings.seed + 1000: not the users the
    fit saw). Relative click rates per slot: each slot's rate over the top slot's."""
    k = int(fitted["users"]["n_communities"])
    real = statistics(real_events(ml), genre_topics(ml.genres), k, settings.seed) if real is None else real
    seed = settings.seed + 1000
    events, _, catalog = simulate(fitted, settings.sim_users, seed, settings.max_steps)
    sim = statistics(events, catalog.topics.astype(np.float64), k, settings.seed)
    rows = []
    for name, value in real.items():
        if name == "genre_shares":
            continue
        s = sim[name]
        sample_size = name in ("users", "events")  # how many were simulated, not a property to match
        rel = (s - value) / abs(value) if value and not sample_size else float("nan")
        rows.append(dict(statistic=name, real=value, simulated=s, relative_difference=rel))
    scalars = pd.DataFrame(rows)
    genres = pd.DataFrame(dict(genre=list(ml.genre_names), real=real["genre_shares"], simulated=sim["genre_shares"]))
    pos = position_decay(obd)
    _, slot_clicks, _ = simulate(fitted, settings.sim_users, seed, min(settings.max_steps, 400), slate_size=SLATE_SLOTS)
    sim_rate = slot_clicks / max(slot_clicks[0], 1.0)
    slots = pd.DataFrame(
        dict(
            slot=np.arange(1, SLATE_SLOTS + 1),
            obd_clicks=pos["clicks"].astype(int),
            obd_shows=pos["shows"].astype(int),
            obd_click_rate=pos["click_rate"],
            obd_relative=pos["click_rate"] / pos["click_rate"][0],
            simulated_relative=sim_rate,
        )
    )
    return scalars, genres, slots


def summary_settings(settings: CalibrationSettings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


# --------------------------------------------------------------------------- report

PRESET_NOTE = (
    "Fitted by experiments/calibrate.py from MovieLens-100k (the recbole 1.2.1 wheel) and the Open Bandit "
    "Dataset sample (obp 0.5.7): derived statistics only, no data. Rewrite with "
    "`python experiments/calibrate.py --update-preset`."
)
MISMATCH = 0.25  # statistics off by more than this (relative) are listed as remaining mismatch


def preset_document(fitted: Mapping[str, Any], command: str) -> dict[str, Any]:
    """The JSON document of the `movielens` preset (envs/movielens.json)."""
    return {"note": PRESET_NOTE, "command": command, "overrides": preset_overrides(fitted)}


def _fmt(x: Any) -> str:
    if isinstance(x, (float, np.floating)):
        return "nan" if not np.isfinite(x) else f"{x:.3g}" if abs(x) < 1000 else f"{x:,.0f}"
    return str(x)


def _table(frame: pd.DataFrame) -> str:
    return markdown_table(frame.columns, ([_fmt(v) for v in row] for row in frame.itertuples(index=False)))


def write_report(
    out: Path,
    result: Mapping[str, Any],
    scalars: pd.DataFrame,
    genres: pd.DataFrame,
    slots: pd.DataFrame,
    settings: CalibrationSettings,
    command: str,
) -> None:
    """report.md, statistics.csv, genres.csv, slots.csv, fit_trail.csv, fitted.json and genres.png in `out`
    (calibrate writes them into a staging folder: all of them or none)."""
    scalars.to_csv(out / "statistics.csv", index=False)
    genres.to_csv(out / "genres.csv", index=False)
    slots.to_csv(out / "slots.csv", index=False)
    pd.DataFrame(result["trail"]).to_csv(out / "fit_trail.csv", index=False)
    (out / "fitted.json").write_text(json.dumps(preset_document(result["overrides"], command), indent=2) + "\n")
    notes, pos = result["notes"], result["notes"]["position"]
    off = scalars[scalars["relative_difference"].abs() > MISMATCH]
    fitted_by_sim = {m.stat for m in MOMENTS}
    scalars = scalars.assign(fitted=["by simulation" if s in fitted_by_sim else "" for s in scalars["statistic"]])
    tv = float(0.5 * np.abs(genres["real"] - genres["simulated"]).sum())
    lines = [
        "# Calibration of the `movielens` preset",
        "",
        f"Command: `{command}` (settings: {summary_settings(settings)}).",
        "Real: MovieLens-100k (943 users, 1,682 items, 100,000 ratings; recbole 1.2.1's copy) and the Open Bandit",
        "Dataset sample (`random` campaign, 10,000 impressions; obp 0.5.7). Simulated: the fitted preset's users",
        f"(seed {settings.seed + 1000}, not the fit's), each shown {SERVE_SLATE} random candidates of the retriever",
        "per step, picking one or none; both sides' statistics come from the same code on (user, item, day) events,",
        f"users with fewer than {MIN_USER_EVENTS} events left out (ml-100k's own filter), a new session after an",
        "hour without an event.",
        "",
        "## Fitted parameters",
        "",
        "```json",
        json.dumps(result["overrides"], indent=1),
        "```",
        "",
        "Closed forms: genres as topics (weights = each genre's mean share of an item's genre vector;",
        f"concentration solved to the items' mean genre Herfindahl index {notes['item_genre_hhi']:.3f}), quality a",
        f"Beta by moments of the mean ratings of the {notes['items_rated_10']} items with 10+ ratings (on [0, 1],",
        f"corrected for the clickbait share {CLICKBAIT_FRACTION}, which is chosen, not fitted), the return gap's",
        f"Weibull shape by maximum likelihood on {notes['between_gaps']} gaps between sessions, churn per session",
        f"(sessions starting {CHURN_GUARD_DAYS:.0f}+ days before the data's end), taste communities at the elbow of",
        "k-means on users' genre profiles (R^2 for k = 1..9: "
        + ", ".join(f"{r:.2f}" for r in notes["kmeans_r2"])
        + "), and the position decay by maximum likelihood on the OBD clicks per slot: "
        f"{pos['decay_mle']:.3f}, 95% interval [{pos['decay_ci'][0]:.2f}, {pos['decay_ci'][1]:.2f}] "
        f"({int(pos['clicks'].sum())} clicks in {int(pos['shows'].sum()):,} impressions: the sample cannot tell a",
        "position effect from none).",
        "Simulated moments (bisection, one parameter at a time, "
        f"{settings.rounds} rounds x {settings.bisection_steps} steps): "
        + "; ".join(f"`{m.param}` to `{m.stat}`" for m in MOMENTS)
        + ".",
        "",
        "## Real against simulated",
        "",
        _table(scalars),
        "",
        f"Genre shares of consumption (total variation distance {tv:.3f}):",
        "",
        _table(genres),
        "",
        "Click rate per slot (OBD `random` campaign; simulated: slates of 3 random candidates, clicks per",
        "slot relative to the top slot's):",
        "",
        _table(slots),
        "",
        "![genre shares](genres.png)",
        "",
        f"## Remaining mismatch (relative difference above {MISMATCH:.0%})",
        "",
    ]
    for row in off.itertuples(index=False):
        lines.append(f"- `{row.statistic}`: real {_fmt(row.real)}, simulated {_fmt(row.simulated)}.")
    if tv > 0.1:
        lines.append(
            f"- genre shares of consumption: total variation distance {tv:.3f} (the item genre mix is fitted; which"
            " genres the taste communities love is drawn at random, not fitted)."
        )
    if off.empty and tv <= 0.1:
        lines.append("None.")
    lines += [
        "",
        "What the simulator cannot express, whatever the parameters: ml-100k users never rate an item twice",
        "(repeat rate 0), while simulated users may click an item again (only the novelty term discourages",
        "repeats of the last `users.recent_items`); ratings come in bursts seconds apart (many share a",
        "timestamp), while a simulated step takes browsing plus watching minutes; MovieLens's own",
        "recommender is unknown, and the simulated users are shown random candidates.",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 3.5))
        x = np.arange(len(genres))
        ax.bar(x - 0.2, genres["real"], 0.4, label="ml-100k")
        ax.bar(x + 0.2, genres["simulated"], 0.4, label="simulated")
        ax.set_xticks(x, genres["genre"], rotation=60, ha="right", fontsize=8)
        ax.set_ylabel("share of consumption")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out / "genres.png", dpi=110)
        plt.close(fig)
    except ImportError:  # matplotlib is a dependency; a missing backend only costs the plot
        pass


def calibrate(
    settings: CalibrationSettings, out: str | Path | None, command: str, update_preset: bool = False
) -> tuple[pd.DataFrame, Path, Path | None]:
    """Fit the preset to the real data, compare it with them and write the report into `out` (default
    runs/calibration/<time>); with `update_preset`, rewrite envs/movielens.json with the fit. Missing
    real-data packages raise RealDataUnavailable before any work. Returns (the compared statistics,
    report.md, the preset file written or None)."""
    ml, obd = load_movielens(), load_obd("random")
    out = writable_dir(out or Path("runs") / "calibration" / time.strftime("%Y%m%d-%H%M%S"), "--out")
    result = fit(ml, obd, settings, progress=lambda line: print(line, flush=True))
    scalars, genres, slots = compare(result["overrides"], ml, obd, settings, result["real"])
    with staged(out) as stage:  # all of the report or none (a failure on the way leaves `out` as it was)
        write_report(stage, result, scalars, genres, slots, settings, command)
    if not update_preset:
        return scalars, out / "report.md", None
    write_text_whole(MOVIELENS_FILE, json.dumps(preset_document(result["overrides"], command), indent=2) + "\n")
    return scalars, out / "report.md", MOVIELENS_FILE
