"""Logged interaction data: a logging policy runs in the simulator and writes one row per
impression. Supervised baselines train on such logs only.

Schema (LOG_COLUMNS): user (episode id, unique per logged session or life), step (episode step; the
interactions a user arrived with, `users.past_interactions`, at steps -n .. -1),
item, position (slate position, 0 = top), click (0/1), watch_time (minutes), completion
(fraction watched), season_sin, season_cos, progress (time features at that step),
scenario, seed. Rows of one user are in step order; within a step, in slate order.
Logs of lifetime scenarios add LIFETIME_LOG_COLUMNS: day (the clock when the step was served),
session_start (the step opened a session), and the context's week_sin, week_cos, days_away and
sessions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.policy import slate_from_scores
from envs.config import ScenarioConfig
from envs.core import context_features
from envs.vector import RecVectorEnv
from simulator.params import check_int, check_range

LOG_COLUMNS = (
    "user",
    "step",
    "item",
    "position",
    "click",
    "watch_time",
    "completion",
    "season_sin",
    "season_cos",
    "progress",
    "scenario",
    "seed",
)
LIFETIME_LOG_COLUMNS = ("day", "session_start", "week_sin", "week_cos", "days_away", "sessions")


@dataclass(frozen=True)
class LogParams:
    """The logged data an agent learns from: who is logged and by which logging policy."""

    log_users: int = 256  # parallel logged sessions
    log_steps: int = 400  # steps logged (sessions restart as they end)
    epsilon: float = 0.3  # exploration of the epsilon-popularity logging policy

    def __post_init__(self) -> None:
        check_int("algo", "log_users", self.log_users, 1)
        check_int("algo", "log_steps", self.log_steps, 1)
        check_range("algo", "epsilon", self.epsilon, 0.0, 1.0)


class EpsilonPopularity:
    """Logging policy: the most popular candidates, or with probability epsilon random ones."""

    name = "epsilon-popularity"

    def __init__(self, epsilon: float = 0.3, seed: int = 0) -> None:
        check_range("algo", "epsilon", epsilon, 0.0, 1.0)
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        self.slate_size = 1

    def bind(self, env: Any) -> None:
        self.slate_size = env.config.env.slate_size

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        popularity = obs["candidate_features"][..., -1]  # popularity rank score [N, C]
        explore = self.rng.random(popularity.shape[0]) < self.epsilon
        scores = np.where(explore[:, None], self.rng.random(popularity.shape), popularity)
        return slate_from_scores(scores, self.slate_size)


def collect_logs(
    config: ScenarioConfig, policy: Any, n_users: int = 256, n_steps: int = 2000, seed: int = 1
) -> pd.DataFrame:
    """Run `policy` on `n_users` parallel sessions for `n_steps` steps (sessions restart as they
    end) and return the impressions as a DataFrame with LOG_COLUMNS."""
    env = RecVectorEnv(num_envs=n_users, scenario=config, seed=seed)
    if hasattr(policy, "bind"):
        policy.bind(env)
    obs, _ = env.reset(seed=seed)
    lifetime = config.world.lifetime.enabled
    names = context_features(config)  # the context columns, by name (season_sin, season_cos, progress, ...)
    episode = np.arange(n_users)  # session (or life) id of each slot
    next_episode = n_users
    step = np.zeros(n_users, dtype=np.int64)  # episode step of each slot
    resetting = np.zeros(n_users, dtype=bool)  # slots whose next step is an autoreset
    length_mean = config.world.catalog.length_mean
    chunks = [_past_rows(obs, np.arange(n_users), episode, length_mean, env, names)]
    for _ in range(n_steps):
        actions = np.asarray(policy.act(obs))
        context = obs["context"]
        state = env.world.state
        when = dict(day=state.day.copy(), session_start=(state.step == 0).astype(np.int8)) if lifetime else {}
        obs, reward, terminated, truncated, info = env.step(actions)
        live, slates = info["served"], info["slate"]  # what was shown; slots being reset showed nothing
        for pos in range(slates.shape[1]):  # K slate positions (few), vectorised over users
            clicked = (info["position"] == pos)[live]
            chunks.append(
                pd.DataFrame(
                    dict(
                        user=episode[live],
                        step=step[live],
                        item=slates[live, pos],
                        position=pos,
                        click=clicked.astype(np.int8),
                        watch_time=np.where(clicked, reward[live], 0.0).astype(np.float32),
                        completion=np.where(clicked, info["completion"][live], 0.0).astype(np.float32),
                        **{name: context[live, i] for i, name in enumerate(names)},
                        **{k: v[live] for k, v in when.items()},
                    )
                )
            )
        step = np.where(live, step + 1, 0)
        if resetting.any():  # those slots now hold new users
            episode[resetting] = np.arange(next_episode, next_episode + resetting.sum())
            next_episode += int(resetting.sum())
            chunks.append(_past_rows(obs, np.flatnonzero(resetting), episode, length_mean, env, names))
        resetting = terminated | truncated
    logs = pd.concat(chunks, ignore_index=True)
    logs["scenario"] = config.name
    logs["seed"] = seed
    columns = list(LOG_COLUMNS) + (list(LIFETIME_LOG_COLUMNS) if lifetime else [])
    return logs.sort_values(["user", "step", "position"], kind="stable", ignore_index=True)[columns]


def _past_rows(
    obs: dict[str, np.ndarray],
    slots: np.ndarray,
    episode: np.ndarray,
    length_mean: float,
    env: Any,
    names: tuple[str, ...],
) -> pd.DataFrame:
    """Rows for what the new users in `slots` did before their episode (the history they arrive
    with, `users.past_interactions`), at steps -n .. -1: a model trained on the logs then reads
    the same histories the env shows it. In lifetime scenarios each past visit was a session of
    its own, a day apart, ending the day before the first (as the env writes them)."""
    mask = obs["history_mask"][slots] > 0  # [M, H], right-aligned
    f = obs["history_features"][slots]
    user_row, col = np.nonzero(mask)
    back = mask.sum(axis=1)[user_row] - (col - (mask.shape[1] - mask.sum(axis=1)[user_row]))  # 1 = newest
    rows = dict(
        user=episode[slots][user_row],
        step=-back,
        item=obs["history_items"][slots][user_row, col],
        position=0,
        click=(f[user_row, col, 0] > 0).astype(np.int8),
        watch_time=(f[user_row, col, 2] * np.float32(length_mean)).astype(np.float32),
        completion=f[user_row, col, 1].astype(np.float32),
        season_sin=f[user_row, col, 3],
        season_cos=f[user_row, col, 4],
        progress=np.float32(0.0),
    )
    if len(names) > 3:  # lifetime: the context of the first step stands in for the past visits'
        context = obs["context"][slots][user_row]
        rows.update({name: context[:, i] for i, name in enumerate(names) if name not in rows})
        rows["day"] = env.world.state.day[slots][user_row] - back
        rows["session_start"] = np.int8(1)
    return pd.DataFrame(rows)


def save_logs(logs: pd.DataFrame, path: str | Path) -> Path:
    """Write logs as Parquet (.parquet) or CSV (any other suffix)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        logs.to_parquet(path, index=False)
    else:
        logs.to_csv(path, index=False)
    return path


def load_logs(path: str | Path, n_items: int | None = None) -> pd.DataFrame:
    """Read logs written by save_logs and validate them (see validate_logs)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"log file not found: {path}")
    logs = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    return validate_logs(logs, n_items)


def validate_logs(logs: pd.DataFrame, n_items: int | None = None, lifetime: bool = False) -> pd.DataFrame:
    """Raise ValueError for logs a model cannot train on: empty, missing columns (the lifetime ones
    too, for a model of a lifetime scenario), bad item ids."""
    expected = list(LOG_COLUMNS) + (list(LIFETIME_LOG_COLUMNS) if lifetime else [])
    missing = [c for c in expected if c not in logs.columns]
    if missing:
        where = " (logs of a session scenario, for a lifetime model?)" if lifetime and "day" in missing else ""
        raise ValueError(f"logs are missing columns {missing}{where}; expected {expected}")
    if len(logs) == 0:
        raise ValueError("logs are empty: nothing to train on")
    if logs["item"].min() < 0:
        raise ValueError(f"logs hold a negative item id ({int(logs['item'].min())})")
    if n_items is not None and logs["item"].max() >= n_items:
        raise ValueError(
            f"logs reference item {int(logs['item'].max())} but the catalog has {n_items} items "
            "(logs from another catalog?)"
        )
    return logs
