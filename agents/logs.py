"""Logged interaction data: a logging policy runs in the simulator and writes one row per
impression. Supervised baselines train on such logs; offline evaluation and offline RL read the
same rows (agents/offline.py turns them into observations, propensities and episodes).

This docstring is the one description of the log schema.

LOG_COLUMNS, on every row (what the supervised baselines need):
  user          episode id, unique per logged session (or life, on lifetime scenarios)
  step          episode step; the interactions a user arrived with (`users.past_interactions`)
                are rows at steps -n .. -1 ("past rows"), the served steps are 0, 1, ...
  item          item id shown; position: slate position (0 = top)
  click         0/1; watch_time (minutes, 0 without a click); completion (fraction watched)
  season_sin, season_cos, progress   the observation's context at that step
  scenario, seed                     the preset name and the env seed of the collection
Rows of one user are in step order; within a step, in slate order (K rows per served step).

LIFETIME_LOG_COLUMNS, lifetime scenarios only: day (the clock when the step was served),
session_start (the step opened a session), and the context's week_sin, week_cos, days_away and
sessions.

OFFLINE_LOG_COLUMNS, what offline evaluation and offline RL need (on served rows; past rows hold
candidate -1, NaN propensities and reward, 0 flags and null lists):
  candidate             the row's candidate index in the step's candidates (the action entry at
                        this position, after the env's deduplication)
  propensity            the logging policy's probability of putting this candidate at this
                        position (position-wise marginal); NaN when the policy does not report one
  slate_propensity      its probability of the whole ordered slate (candidate indices); NaN likewise
  reward                the step's reward (minutes watched: the clicked slot's watch_time, 0
                        without a click), the same on the K rows of a step
  terminated, truncated 0/1: the episode ended after this step (the same on the step's rows); an
                        episode the collection cut off before its end has neither set
  history_items         list[H] int32: the observation's history ids (oldest first, newest last;
                        0 where the history mask is 0)
  candidate_items       list[C] int32: the observation's candidate ids
  candidate_popularity  list[C] float32: the candidates' observed popularity (the last column of
                        candidate_features; it moves on lifetime scenarios, the rest of an item's
                        features is the catalog's fixed table)
  position_propensities list[K * C] float64: the logging probability of each candidate at each
                        position, row-major [K, C] (each position's row sums to 1); NaN when unknown
  true_expected_reward  list[C] float32: GROUND TRUTH, never observed by a real platform: the
                        expected watch time of each candidate shown alone at the top under the
                        user's true state before the step (`World.expected_engagement`); for
                        analysing estimators (their one-step truth), never read by them
OFFLINE_LIFETIME_COLUMNS, lifetime scenarios: session_end (0/1, the step ended a session).
The list columns (LIST_COLUMNS) repeat on the K rows of a step (K = 1 on every preset); they need
Parquet (save_logs leaves them out of a CSV). Logs written before the offline columns existed still train
the supervised baselines; offline use names the missing columns (`validate_offline_logs`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from agents.policy import Propensities, bind, slate_from_scores
from envs.config import ScenarioConfig
from envs.core import context_features, dedupe_slates
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
OFFLINE_LOG_COLUMNS = (
    "candidate",
    "propensity",
    "slate_propensity",
    "reward",
    "terminated",
    "truncated",
    "history_items",
    "candidate_items",
    "candidate_popularity",
    "position_propensities",
    "true_expected_reward",
)
OFFLINE_LIFETIME_COLUMNS = ("session_end",)
LIST_COLUMNS = (
    "history_items",
    "candidate_items",
    "candidate_popularity",
    "position_propensities",
    "true_expected_reward",
)  # one array per row


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


LOG_SEED_OFFSET = 1_000  # an agent's own logs come from other users than its training (seed) and evaluation


def logged_data(
    scenario: ScenarioConfig, params: LogParams, seed: int, run_dir: Path | None, until_day: float | None = None
) -> pd.DataFrame:
    """The logs an agent learns from when it collects its own (the factories', the PPO warm start's):
    the epsilon-popularity logging policy on users of seed LOG_SEED_OFFSET + seed, `log_steps` steps,
    or with `until_day` (lifetime scenarios) the days [0, until_day) of `log_users` lives (at most
    `env.max_steps` steps, a life's longest); saved to run_dir/logs.parquet when `run_dir` is given."""
    logs = collect_logs(
        scenario,
        EpsilonPopularity(params.epsilon, seed),
        params.log_users,
        params.log_steps if until_day is None else scenario.env.max_steps,
        seed=LOG_SEED_OFFSET + seed,
        until_day=until_day,
    )
    if run_dir is not None:
        save_logs(logs, Path(run_dir) / "logs.parquet")
    return logs


class EpsilonPopularity:
    """Logging policy: with probability 1 - epsilon the K most popular candidates (ties to the lower
    index), with probability epsilon a uniformly random ordered K-subset of the C candidates.

    Its propensities are exact, in closed form (`position_probabilities`, `slate_probability`):
    every candidate gets at least epsilon / C at every position, so any target policy has
    support when epsilon > 0.
    """

    name = "epsilon-popularity"

    def __init__(self, epsilon: float = 0.3, seed: int = 0) -> None:
        check_range("algo", "epsilon", epsilon, 0.0, 1.0)
        self.epsilon = epsilon
        self.rng = np.random.default_rng(seed)
        self.slate_size = 1

    def bind(self, env: Any) -> None:
        self.slate_size = env.config.env.slate_size

    def greedy(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """[N, K] the exploiting slate: candidates by observed popularity, best first."""
        popularity = obs["candidate_features"][..., -1]  # popularity rank score [N, C]
        return slate_from_scores(popularity, self.slate_size).reshape(popularity.shape[0], -1)

    def act(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        popularity = obs["candidate_features"][..., -1]  # popularity rank score [N, C]
        explore = self.rng.random(popularity.shape[0]) < self.epsilon
        # The top K of iid uniform scores is a uniformly random ordered K-subset.
        scores = np.where(explore[:, None], self.rng.random(popularity.shape), popularity)
        return slate_from_scores(scores, self.slate_size)

    def position_probabilities(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        """[N, K, C] probability that candidate c is served at position k: (1 - epsilon) on the
        greedy slate's candidate, plus epsilon / C everywhere (a random ordered subset puts each
        candidate at each position with probability 1 / C)."""
        greedy = self.greedy(obs)  # [N, K]
        n, k = greedy.shape
        c = obs["candidate_features"].shape[1]
        probs = np.full((n, k, c), self.epsilon / c)
        probs[np.arange(n)[:, None], np.arange(k)[None, :], greedy] += 1.0 - self.epsilon
        return probs

    def slate_probability(self, obs: dict[str, np.ndarray], slates: np.ndarray) -> np.ndarray:
        """[N] probability of serving the ordered slates `slates` [N, K] (distinct candidate indices):
        (1 - epsilon) if it is the greedy slate, plus epsilon (C - K)! / C! (one ordered K-subset)."""
        greedy = self.greedy(obs)
        n, k = greedy.shape
        c = obs["candidate_features"].shape[1]
        uniform = 1.0 / np.prod(np.arange(c - k + 1, c + 1, dtype=np.float64))
        same = (np.asarray(slates).reshape(n, k) == greedy).all(axis=1)
        return np.where(same, 1.0 - self.epsilon, 0.0) + self.epsilon * uniform


def collect_logs(
    config: ScenarioConfig,
    policy: Any,
    n_users: int = 256,
    n_steps: int = 2000,
    seed: int = 1,
    until_day: float | None = None,
) -> pd.DataFrame:
    """Run `policy` on `n_users` parallel sessions for `n_steps` steps (sessions restart as they
    end) and return the impressions as a DataFrame with the module's schema (LOG_COLUMNS, the
    offline columns, and the lifetime ones on lifetime scenarios).

    `until_day` (lifetime scenarios): the logs of days [0, until_day), as a platform holds them
    on that day. The collection stops once every slot's first user has left or passed
    `until_day` on their own clock (users' clocks diverge; `n_steps` still caps it), and only rows
    served before `until_day` are kept (the past rows users arrived with, dated before their first
    visit, included). Slots restarted with new users log too, up to the same day.

    Propensities come from the policy's `position_probabilities(obs)` [N, K, C] and
    `slate_probability(obs, slates)` [N] when it has them (NaN otherwise). The first episode of
    slot i is user i; with the same seed and `n_users`, those are the users the evaluation
    harness shows the same policy (common random numbers)."""
    env = RecVectorEnv(num_envs=n_users, scenario=config, seed=seed)
    bind(policy, env)
    obs, _ = env.reset(seed=seed)
    lifetime = config.world.lifetime.enabled
    names = context_features(config)  # the context columns, by name (season_sin, season_cos, progress, ...)
    n_candidates, slate_size = config.env.num_candidates, config.env.slate_size
    reports = isinstance(policy, Propensities)
    episode = np.arange(n_users)  # session (or life) id of each slot
    next_episode = n_users
    step = np.zeros(n_users, dtype=np.int64)  # episode step of each slot
    resetting = np.zeros(n_users, dtype=bool)  # slots whose next step is an autoreset
    length_mean = config.world.catalog.length_mean
    if until_day is not None:
        if not lifetime:
            raise ValueError(f"until_day is for lifetime scenarios: {config.name!r} has no calendar")
        check_range("logs", "until_day", until_day, 0.0, lo_open=True)
    first_life = np.ones(n_users, dtype=bool)  # slots still on their first user
    chunks = [_past_rows(obs, np.arange(n_users), episode, length_mean, env, names)]
    for _ in range(n_steps):
        if until_day is not None and not (first_life & (env.world.state.day < until_day)).any():
            break
        actions = np.asarray(policy.act(obs))
        slate_index = dedupe_slates(actions.reshape(n_users, -1).astype(np.int64), n_candidates)  # as the env serves
        if reports:
            by_position = np.asarray(policy.position_probabilities(obs), dtype=np.float64)  # [N, K, C]
            slate_p = np.asarray(policy.slate_probability(obs, slate_index), dtype=np.float64)  # [N]
        else:
            by_position = np.full((n_users, slate_size, n_candidates), np.nan)
            slate_p = np.full(n_users, np.nan)
        truth = env.world.expected_engagement(obs["candidate_items"].astype(np.int64))  # [N, C] hidden state
        context = obs["context"]
        state = env.world.state
        when = dict(day=state.day.copy(), session_start=(state.step == 0).astype(np.int8)) if lifetime else {}
        seen = obs
        obs, reward, terminated, truncated, info = env.step(actions)
        live, slates = info["served"], info["slate"]  # what was shown; slots being reset showed nothing
        if lifetime:
            when["session_end"] = info["session_end"].astype(np.int8)
        # Per-step lists, shared by the step's K rows (views: no copies).
        lists = dict(
            history_items=list(seen["history_items"][live]),
            candidate_items=list(seen["candidate_items"][live]),
            candidate_popularity=list(seen["candidate_features"][live, :, -1]),
            position_propensities=list(by_position[live].reshape(int(live.sum()), slate_size * n_candidates)),
            true_expected_reward=list(truth[live]),
        )
        rows = np.flatnonzero(live)
        for pos in range(slates.shape[1]):  # K slate positions (few), vectorised over users
            clicked = (info["position"] == pos)[live]
            chosen = slate_index[live, pos]
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
                        candidate=chosen.astype(np.int16),
                        propensity=by_position[rows, pos, chosen],
                        slate_propensity=slate_p[live],
                        reward=reward[live].astype(np.float32),
                        terminated=terminated[live].astype(np.int8),
                        truncated=truncated[live].astype(np.int8),
                        **lists,
                    )
                )
            )
        step = np.where(live, step + 1, 0)
        if resetting.any():  # those slots now hold new users
            episode[resetting] = np.arange(next_episode, next_episode + resetting.sum())
            next_episode += int(resetting.sum())
            chunks.append(_past_rows(obs, np.flatnonzero(resetting), episode, length_mean, env, names))
        resetting = terminated | truncated
        first_life &= ~resetting
    logs = pd.concat(chunks, ignore_index=True)
    if until_day is not None:
        logs = logs[logs["day"].to_numpy() < until_day].reset_index(drop=True)
    logs["scenario"] = config.name
    logs["seed"] = seed
    return logs.sort_values(["user", "step", "position"], kind="stable", ignore_index=True)[log_columns(lifetime)]


def log_columns(lifetime: bool, offline: bool = True) -> list[str]:
    """The columns of logs collected now, in order (`offline=False`: those a supervised model needs)."""
    columns = list(LOG_COLUMNS) + (list(LIFETIME_LOG_COLUMNS) if lifetime else [])
    if offline:
        columns += list(OFFLINE_LOG_COLUMNS) + (list(OFFLINE_LIFETIME_COLUMNS) if lifetime else [])
    return columns


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
        rows["session_end"] = np.int8(0)
    # Not a served step: no action, propensity, reward or observation of its own.
    rows.update(candidate=np.int16(-1), propensity=np.nan, slate_propensity=np.nan, reward=np.float32(np.nan))
    rows.update(terminated=np.int8(0), truncated=np.int8(0))
    frame = pd.DataFrame(rows)
    for name in ("history_items", "candidate_items", "candidate_popularity", "position_propensities"):
        frame[name] = None
    frame["true_expected_reward"] = None
    return frame


def save_logs(logs: pd.DataFrame, path: str | Path) -> Path:
    """Write logs as Parquet (.parquet), or CSV (any other suffix) without the list columns (a CSV
    cell cannot hold an array: CSV logs train the supervised baselines, offline evaluation needs Parquet)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        logs.to_parquet(path, index=False)
    else:
        logs.drop(columns=[c for c in LIST_COLUMNS if c in logs.columns]).to_csv(path, index=False)
    return path


def load_logs(path: str | Path, n_items: int | None = None) -> pd.DataFrame:
    """Read logs written by save_logs and validate them (see validate_logs)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"log file not found: {path}")
    kind = "Parquet" if path.suffix == ".parquet" else "CSV"
    try:
        logs = pd.read_parquet(path) if kind == "Parquet" else pd.read_csv(path)
    except (OSError, ValueError, UnicodeDecodeError) as err:  # pyarrow's errors derive from these
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"log file {path} is not readable {kind}: {first}") from None
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


def validate_offline_logs(logs: pd.DataFrame, config: ScenarioConfig) -> pd.DataFrame:
    """Raise ValueError, in one line, for logs offline evaluation cannot read: what `validate_logs`
    refuses, missing offline columns (logs written before they existed), no served step, list
    columns that are not arrays (read from CSV) or of the wrong length for `config`'s sizes."""
    lifetime = config.world.lifetime.enabled
    offline = [c for c in log_columns(lifetime) if c not in log_columns(lifetime, offline=False)]
    missing = [c for c in offline if c not in logs.columns]
    if missing:
        raise ValueError(
            f"logs are missing the offline columns {missing} (written before agents.logs recorded them?); "
            "collect them again with agents.logs.collect_logs"
        )
    validate_logs(logs, lifetime=lifetime)
    served = logs[logs["step"] >= 0]
    if served.empty:
        raise ValueError("logs hold no served step (only the interactions users arrived with)")
    e = config.env
    sizes = dict(
        history_items=e.history_len,
        candidate_items=e.num_candidates,
        candidate_popularity=e.num_candidates,
        position_propensities=e.slate_size * e.num_candidates,
        true_expected_reward=e.num_candidates,
    )
    for name, size in sizes.items():  # the LIST_COLUMNS
        first = served[name].iloc[0]
        if not isinstance(first, (np.ndarray, list)):
            raise ValueError(
                f"logs column {name!r} holds {type(first).__name__}, not arrays (save offline logs as .parquet)"
            )
        if len(first) != size:
            raise ValueError(
                f"logs column {name!r} holds {len(first)} values per step but scenario {config.name!r} needs {size} "
                "(logs of another configuration?)"
            )
    if served["position"].max() >= e.slate_size:
        raise ValueError(f"logs hold slate position {int(served['position'].max())} but slate_size is {e.slate_size}")
    return logs
