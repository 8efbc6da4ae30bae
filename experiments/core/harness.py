"""The one evaluation harness: the same users, seeds and metrics for every policy.

Evaluation runs `n_users` sessions side by side, one episode each, on a vector env
seeded with `seed`. The simulator draws the same random numbers every step
whatever the policy does, so two policies evaluated with the same seed face the
same users and the same noise (common random numbers): their numbers differ by
policy only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from agents.policy import Observer, bind, deployment
from envs.config import ScenarioConfig
from envs.vector import RecVectorEnv

EVAL_SEED = 10_000  # evaluation users are disjoint from training seeds (0, 1, 2, ...)
VALIDATION_SEED = 20_000  # users to choose a snapshot on (run.py --keep-best): neither training's nor EVAL_SEED's
PROGRESS_SECONDS = 10.0  # evaluate(progress=...): seconds between two status lines
RETENTION_DAYS = (1, 7, 30)  # lifetime scenarios: retention_d1, retention_d7, retention_d30


@dataclass
class Evaluation:
    """What one evaluation measured.

    episodes: one row per evaluation user; timeline: one row per episode step
    (active users, mean engagement (minutes watched) of active users, clicks, fit
    (mean true topic fit of the served items to the active users' current interests,
    which only the simulator knows), the population's consumed topic shares
    share_0..share_{T-1}); metrics: the summary numbers; by_day (lifetime scenarios, else
    None): one row per calendar day (active_users, watch_per_active_user, retention: the share
    of users still active on or after that many days since their first visit).
    """

    episodes: pd.DataFrame
    timeline: pd.DataFrame
    metrics: dict[str, float]
    by_day: pd.DataFrame | None = None


def retention(first_day: np.ndarray, last_day: np.ndarray, days: np.ndarray, horizon: float) -> np.ndarray:
    """[D] share of users active on or after each of `days` [D] since their first visit, from each
    user's first and last active day [N]. Right-censored: for day d only the users followed for at
    least d days before the `horizon` count (where first visits spread over the calendar, a late
    arrival cannot yet show a day-30 return); NaN where no user was followed that long."""
    first = np.asarray(first_day, np.float64)
    since = np.asarray(last_day, np.float64) - first
    days = np.asarray(days, np.float64)
    followed = (horizon - first)[None, :] >= days[:, None]  # [D, N]
    returned = (since[None, :] >= days[:, None]) & followed
    count = followed.sum(axis=1)
    return np.where(count > 0, returned.sum(axis=1) / np.maximum(count, 1), np.nan)


class _Lifetimes:
    """Tally of a lifetime evaluation: sessions, churn, gaps, and who was active on which day."""

    def __init__(self, n_users: int, horizon: float) -> None:
        self.horizon = horizon
        self.sessions, self.churned = np.ones(n_users), np.zeros(n_users, bool)
        self.gap_sum, self.gaps = 0.0, 0
        self.first_day = np.full(n_users, np.nan)
        self.last_day = np.full(n_users, np.nan)
        self.counted_day = np.full(n_users, -1, np.int64)
        self.active_days = np.zeros(n_users)
        days = int(np.ceil(horizon)) + 2
        self.watch_by_day, self.users_by_day = np.zeros(days), np.zeros(days)

    def before_step(self, day: np.ndarray, active: np.ndarray) -> None:
        self.first_day = np.where(active & np.isnan(self.first_day), day, self.first_day)
        self.last_day = np.where(active, day, self.last_day)
        whole = np.minimum(np.floor(day).astype(np.int64), len(self.users_by_day) - 1)
        new_day = active & (whole != self.counted_day)
        self.active_days += new_day
        np.add.at(self.users_by_day, whole[new_day], 1)
        self.counted_day = np.where(new_day, whole, self.counted_day)
        self._whole = whole

    def after_step(self, info: dict, reward: np.ndarray, active: np.ndarray, done: np.ndarray, terminated) -> None:
        np.add.at(self.watch_by_day, self._whole[active], reward[active])
        back = info["session_end"] & active & ~done  # a session ended and the user returns
        self.sessions += back
        self.gap_sum, self.gaps = self.gap_sum + float(info["gap"][back].sum()), self.gaps + int(back.sum())
        self.churned |= terminated & active

    def results(self, returns: np.ndarray) -> tuple[dict[str, float], pd.DataFrame]:
        share = retention(self.first_day, self.last_day, np.array(RETENTION_DAYS), self.horizon)
        metrics = dict(
            sessions_mean=float(self.sessions.mean()),
            churn_rate=float(self.churned.mean()),
            gap_mean=self.gap_sum / self.gaps if self.gaps else float("nan"),
            watch_per_active_day=float((returns / np.maximum(self.active_days, 1)).mean()),
            **{f"retention_d{d}": float(r) for d, r in zip(RETENTION_DAYS, share)},
        )
        days = np.arange(int(np.floor(self.horizon)) + 1)
        users = self.users_by_day[: len(days)]
        by_day = pd.DataFrame(
            dict(
                day=days,
                active_users=users.astype(int),
                watch_per_active_user=np.divide(self.watch_by_day[: len(days)], np.maximum(users, 1)),
                retention=retention(self.first_day, self.last_day, days, self.horizon),
            )
        )
        return metrics, by_day


def shares(counts: np.ndarray) -> np.ndarray:
    """Rows of non-negative counts [..., T] as shares summing to 1 (all-zero rows stay zero)."""
    total = counts.sum(axis=-1, keepdims=True)
    return np.divide(counts, total, out=np.zeros_like(counts, dtype=np.float64), where=total > 0)


def concentration(counts: np.ndarray) -> np.ndarray:
    """Herfindahl index of topic counts [..., T]: 1/T when spread evenly, 1 when all in one topic."""
    return (shares(counts) ** 2).sum(axis=-1)


def _entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of non-negative counts [N, T]."""
    p = shares(counts)
    with np.errstate(divide="ignore", invalid="ignore"):
        return -(np.where(p > 0, p * np.log(p), 0.0)).sum(axis=1)


def _status(step: int, active: np.ndarray, day: np.ndarray, life: _Lifetimes | None) -> str:
    """What an evaluation is doing: step, live users and (lifetimes) the slowest live user's day [N]."""
    text = f"evaluating: step {step:,d}, {int(active.sum()):,d} of {len(active):,d} users live"
    if life is not None:
        text += f", day {float(day[active].min()):.1f} of {life.horizon:g}"
    return text


def evaluate(
    policy: Any,
    config: ScenarioConfig,
    n_users: int = 256,
    seed: int = EVAL_SEED,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Run one episode for each of `n_users` evaluation users and measure the policy.

    Metrics: return_mean (minutes watched per session) and its 95% CI half-width,
    ctr (clicks per step), session_length, satisfaction_end, consumption_entropy
    (topic entropy of what each user watched), slate_diversity (mean pairwise topic
    distance inside a slate; 0 for single-item slates), coverage (share of the
    catalog recommended at least once), homogenisation (concentration of the whole
    population's consumption over topics, see `concentration`) and
    homogenisation_trend (its change from the first to the second half of the steps).
    On lifetime scenarios the episode is a user's life, so return_mean is lifetime watch time
    and session_length the steps of a life; they add sessions_mean (sessions per user),
    churn_rate (share of users who churned before the horizon), gap_mean (mean days between
    two sessions), watch_per_active_day (minutes per user per day with a session) and
    retention_d1/d7/d30 (share of users active on or after that day since their first visit, among
    the users followed that long before the horizon; NaN where none was), and the per-day curves of `by_day`.

    A policy deployed on a date (lifetime scenarios) says so with two attributes (the protocol
    `agents.policy.DatedDeployment`): `serves_from_day` (float T) and `warmup` (a Policy: the
    platform's policy before T, e.g. the logging policy its training logs came from). Each user is
    then served by `warmup` while their own clock is before T and by `policy` from T on (clocks
    diverge: both can serve in one step); lives are measured whole, and the metrics add
    return_served_mean (minutes per user watched from T on, under `policy`; 0 for users gone before T)
    and served_users (share of users `policy` served at all). An online learner (the protocol
    `agents.policy.Observer`) hears every step through `observe`, with the step info plus
    `info["evaluated"] [N]`: the slot counts in this evaluation and was served `policy`'s own action
    (False for a warm-up step or a slot past its user's life), and `info["done"] [N]`: the slot's user
    ended at this step (terminated or truncated).

    Every slot is stepped until the last user's episode ends: a finished slot is reset to a newcomer
    (the vector env's autoreset) who is served by the policy and counts for nothing here, but on
    scenarios with population dynamics (moving popularity, trends) the newcomers' watching moves
    the world the live users see, as a platform's other users would. So a policy's actions on those
    slots matter, and the cost of an evaluation is N x the longest episode's steps.

    `progress`, when given, hears a one-line status (users still live; on lifetimes the slowest
    live user's day against the horizon) at most every PROGRESS_SECONDS: lives run to thousands of steps.
    """
    env = RecVectorEnv(num_envs=n_users, scenario=config, seed=seed)
    bind(policy, env)
    obs, _ = env.reset(seed=seed)
    cat = env.world.catalog
    n_topics = cat.n_topics
    active = np.ones(n_users, dtype=bool)
    ret = np.zeros(n_users)
    clicks = np.zeros(n_users)
    length = np.zeros(n_users, dtype=np.int64)
    satisfaction_end = np.full(n_users, np.nan)
    topic_counts = np.zeros((n_users, n_topics))
    shown = np.zeros(cat.n_items, dtype=bool)
    timeline = []
    diversity_sum, diversity_n = 0.0, 0
    rows = np.arange(n_users)
    life = _Lifetimes(n_users, config.world.lifetime.horizon_days) if config.world.lifetime.enabled else None
    warmup, start_day = deployment(policy)
    if warmup is not None:
        if life is None:
            raise ValueError(f"{policy.name} serves from a day (serves_from_day) but {config.name!r} has no calendar")
        bind(warmup, env)
    served_return, served_once = np.zeros(n_users), np.zeros(n_users, dtype=bool)
    said = time.perf_counter()
    while active.any():
        if progress is not None and time.perf_counter() - said >= PROGRESS_SECONDS:
            progress(_status(len(timeline), active, env.world.state.day, life))
            said = time.perf_counter()
        in_warmup = env.world.state.day < start_day if warmup is not None else np.zeros(n_users, dtype=bool)
        if in_warmup[active].all():  # only the warm-up policy serves this step
            actions = np.asarray(warmup.act(obs))
        else:
            actions = np.asarray(policy.act(obs))
            if in_warmup[active].any():
                warm = np.asarray(warmup.act(obs))
                actions = np.where(in_warmup.reshape(-1, *([1] * (actions.ndim - 1))), warm, actions)
        own = active & ~in_warmup  # the slots that count and were served the policy's action
        if life is not None:
            life.before_step(env.world.state.day, active)
        # How well the slates suit the users' interests now, before the step (ground truth).
        fit = env.slate_fit(actions)[active].mean()
        next_obs, reward, terminated, truncated, info = env.step(actions)
        slates = info["slate"]  # [N, K] item ids shown (active slots are all served)
        shown[slates[active].ravel()] = True
        if slates.shape[1] > 1:
            t = cat.topics[slates[active]]  # [n, K, T]
            dist = 0.5 * np.abs(t[:, :, None, :] - t[:, None, :, :]).sum(-1)
            k = slates.shape[1]
            diversity_sum += dist.sum() / (k * (k - 1))
            diversity_n += int(active.sum())
        if isinstance(policy, Observer):
            policy.observe(obs, actions, reward, dict(info, evaluated=own, done=terminated | truncated))
        clicked = info["clicked"] & active
        ret += np.where(active, reward, 0.0)
        served_return += np.where(own, reward, 0.0)
        served_once |= own
        clicks += clicked
        length += active
        items = info["item"][clicked]
        topic_counts[clicked, cat.dominant_topic[items]] += 1
        n_active = int(active.sum())
        timeline.append(
            np.concatenate(
                [[len(timeline), n_active, reward[active].mean(), clicked.sum(), fit], cat.topics[items].sum(axis=0)]
            )
        )
        done = (terminated | truncated) & active
        if life is not None:
            life.after_step(info, reward, active, done, terminated)
        if done.any():
            satisfaction_end[done] = env.ground_truth()["satisfaction"][done]
        active &= ~done
        obs = next_obs
    episodes = pd.DataFrame(
        dict(
            user=rows,
            episode_return=ret,
            clicks=clicks,
            session_length=length,
            satisfaction_end=satisfaction_end,
            consumption_entropy=_entropy(topic_counts),
        )
    )
    if life is not None:
        episodes["sessions"], episodes["churned"], episodes["active_days"] = (
            life.sessions,
            life.churned,
            life.active_days,
        )
    share_cols = [f"share_{t}" for t in range(n_topics)]
    steps = pd.DataFrame(
        np.array(timeline), columns=["step", "active_users", "engagement", "clicks", "fit"] + share_cols
    )
    consumed = steps[share_cols].to_numpy()  # topic mass consumed per step [steps, T]
    half_point = len(steps) // 2
    steps[share_cols] = shares(consumed)
    steps = steps.astype({"step": int, "active_users": int, "clicks": int})
    half = 1.96 * ret.std(ddof=1) / np.sqrt(n_users) if n_users > 1 else float("nan")
    metrics = dict(
        return_mean=float(ret.mean()),
        return_ci95=float(half),
        ctr=float(clicks.sum() / length.sum()),
        session_length=float(length.mean()),
        satisfaction_end=float(np.nanmean(satisfaction_end)),
        consumption_entropy=float(episodes.consumption_entropy.mean()),
        slate_diversity=float(diversity_sum / diversity_n) if diversity_n else 0.0,
        coverage=float(shown[: cat.n_initial].mean()),
        homogenisation=float(concentration(consumed.sum(0))),
        homogenisation_trend=float(
            concentration(consumed[half_point:].sum(0)) - concentration(consumed[:half_point].sum(0))
        ),
    )
    if warmup is not None:
        metrics.update(return_served_mean=float(served_return.mean()), served_users=float(served_once.mean()))
    by_day = None
    if life is not None:
        extra, by_day = life.results(ret)
        metrics.update(extra)
    return Evaluation(episodes=episodes, timeline=steps, metrics=metrics, by_day=by_day)
