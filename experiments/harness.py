"""The one evaluation harness: the same users, seeds and metrics for every policy.

Evaluation runs `n_users` sessions side by side, one episode each, on a vector env
seeded with `seed`. The simulator draws the same random numbers every step
whatever the policy does, so two policies evaluated with the same seed face the
same users and the same noise (common random numbers): their numbers differ by
policy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from envs.config import ScenarioConfig
from envs.vector import RecVectorEnv

EVAL_SEED = 10_000  # evaluation users are disjoint from training seeds (0, 1, 2, ...)


@dataclass
class Evaluation:
    """What one evaluation measured.

    episodes: one row per evaluation user; timeline: one row per episode step
    (active users, mean engagement (minutes watched) of active users, clicks, fit
    (mean true topic fit of the served items to the active users' current interests,
    which only the simulator knows), the population's consumed topic shares
    share_0..share_{T-1}); metrics: the summary numbers.
    """

    episodes: pd.DataFrame
    timeline: pd.DataFrame
    metrics: dict[str, float]


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


def evaluate(policy: Any, config: ScenarioConfig, n_users: int = 256, seed: int = EVAL_SEED) -> Evaluation:
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
    churn_rate (share of users who churned before the horizon) and gap_mean (mean days
    between two sessions).
    """
    env = RecVectorEnv(num_envs=n_users, scenario=config, seed=seed)
    if hasattr(policy, "bind"):
        policy.bind(env)
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
    lifetime = config.world.lifetime.enabled
    sessions, churned, gap_sum, gaps = np.ones(n_users), np.zeros(n_users, bool), 0.0, 0
    while active.any():
        actions = np.asarray(policy.act(obs))
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
        if hasattr(policy, "observe"):
            policy.observe(obs, actions, reward, info)
        clicked = info["clicked"] & active
        ret += np.where(active, reward, 0.0)
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
        if lifetime:
            back = info["session_end"] & active & ~done  # a session ended and the user returns
            sessions += back
            gap_sum, gaps = gap_sum + float(info["gap"][back].sum()), gaps + int(back.sum())
            churned |= terminated & active
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
    if lifetime:
        episodes["sessions"], episodes["churned"] = sessions, churned
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
    if lifetime:
        metrics.update(
            sessions_mean=float(sessions.mean()),
            churn_rate=float(churned.mean()),
            gap_mean=gap_sum / gaps if gaps else float("nan"),
        )
    return Evaluation(episodes=episodes, timeline=steps, metrics=metrics)
