"""Offline data: logged steps as arrays, the observations the logging policy saw rebuilt from the
logs, and the logs as a Minari dataset for offline RL.

The logs (schema: agents/logs.py) hold one row per impression. `logged_steps` turns their served
steps into one row per user-step with the observation exactly as the env built it (histories
rebuilt from the logged responses, as the supervised models read them; candidates and their
observed popularity as recorded; the rest of the item features from the catalog's fixed table),
the served slate, the per-slot rewards and the logging propensities.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from agents.logs import validate_offline_logs
from agents.training_examples import step_examples
from envs.config import ScenarioConfig
from envs.core import action_space, observation_space
from simulator.world import World

OBS_KEYS = ("history_items", "history_features", "history_mask", "candidate_items", "candidate_features", "context")


@dataclass(frozen=True)
class LoggedSteps:
    """The served steps of offline logs: S user-steps in (seed, user, step) order, E episodes.

    obs: the observation the logging policy acted on, as the env built it (OBS_KEYS, leading
      axis S): history_items [S, H] int32, history_features [S, H, F_hist], history_mask [S, H],
      candidate_items [S, C] int32, candidate_features [S, C, F_item], context [S, F_ctx].
    episode [S] index 0..E-1 of the step's episode; step [S] episode step; user [S], seed [S].
    slate [S, K] served candidate indices, top first; items [S, K] their item ids.
    click [S, K] bool; slot_reward [S, K] watch time of each slot (0 unless clicked);
    reward [S] (their sum: the step's minutes watched).
    propensity [S, K] the logging probability of each served candidate at its position;
    slate_propensity [S]; position_propensities [S, K, C] the logging policy's position-wise
    distribution over candidates.
    true_expected_reward [S, C] ground truth (never for estimators): each candidate's expected
      watch time alone at the top under the true state.
    terminated, truncated [S] bool: the episode ended after the step.
    day [S] the clock (lifetime; NaN in session scenarios); session_start [S] bool; session [S] the
      session's index in the episode (0 = the first logged session; always 0 in session scenarios);
      new_user [S] bool: the user arrived without past interactions (no earlier visits).
    final_obs: the observation after each episode's last logged step (OBS_KEYS, leading axis E):
      its history is exact (the last step's response appended; on lifetimes, days ago as of the
      last step's day); its candidates and context repeat the last step's (the env draws new
      candidates only if the episode goes on; nothing acts on them).
    """

    obs: dict[str, np.ndarray]
    episode: np.ndarray
    step: np.ndarray
    user: np.ndarray
    seed: np.ndarray
    slate: np.ndarray
    items: np.ndarray
    click: np.ndarray
    slot_reward: np.ndarray
    reward: np.ndarray
    propensity: np.ndarray
    slate_propensity: np.ndarray
    position_propensities: np.ndarray
    true_expected_reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    day: np.ndarray
    session_start: np.ndarray
    session: np.ndarray
    new_user: np.ndarray
    final_obs: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.step)

    @property
    def n_episodes(self) -> int:
        return len(self.final_obs["context"])

    def select(self, keep: np.ndarray) -> LoggedSteps:
        """The steps where `keep` [S] is True (episodes renumbered; final observations of the kept ones)."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise ValueError(f"select: keep must be a bool mask of shape ({len(self)},), got {keep.shape}")
        kept_episodes, episode = np.unique(self.episode[keep], return_inverse=True)
        fields = {
            f.name: getattr(self, f.name)[keep]
            for f in dataclasses.fields(self)
            if f.name not in ("obs", "final_obs", "episode")
        }
        return LoggedSteps(
            obs={k: v[keep] for k, v in self.obs.items()},
            episode=episode,
            final_obs={k: v[kept_episodes] for k, v in self.final_obs.items()},
            **fields,
        )

    @staticmethod
    def concat(parts: list[LoggedSteps]) -> LoggedSteps:
        """One LoggedSteps of several, in order (episodes renumbered after the previous parts')."""
        offsets = np.cumsum([0] + [p.n_episodes for p in parts[:-1]])
        fields: dict = {}
        for f in dataclasses.fields(LoggedSteps):
            values = [getattr(p, f.name) for p in parts]
            if f.name in ("obs", "final_obs"):
                fields[f.name] = {k: np.concatenate([v[k] for v in values]) for k in OBS_KEYS}
            elif f.name == "episode":
                fields[f.name] = np.concatenate([v + o for v, o in zip(values, offsets)])
            else:
                fields[f.name] = np.concatenate(values)
        return LoggedSteps(**fields)

    def episode_bounds(self) -> Iterator[tuple[int, int]]:
        """(start, stop) step ranges of each episode, in order."""
        stops = np.flatnonzero(np.diff(self.episode)) + 1
        return zip(np.r_[0, stops], np.r_[stops, len(self)])


def catalog_features(config: ScenarioConfig) -> np.ndarray:
    """[I, T + 4] float32 the catalog's item features as first observed (fixed by `catalog.seed`)."""
    return World(config.world, 1, 0).catalog.features.astype(np.float32)


def logged_steps(logs: pd.DataFrame, config: ScenarioConfig) -> LoggedSteps:
    """The served steps of offline logs of `config` as a LoggedSteps; one-line ValueErrors for logs
    offline evaluation cannot read (see agents.logs.validate_offline_logs)."""
    validate_offline_logs(logs, config)
    e, lifetime = config.env, config.world.lifetime.enabled
    k = e.slate_size
    logs = logs.sort_values(["seed", "user", "step", "position"], kind="stable", ignore_index=True)
    col = lambda name, dtype=None: logs[name].to_numpy(dtype=dtype)  # noqa: E731
    served = col("step") >= 0
    top = served & (col("position") == 0)
    n = int(top.sum())
    if served.sum() != n * k or not np.array_equal(col("position")[served], np.tile(np.arange(k), n)):
        raise ValueError(f"logs: every served step needs its {k} slate rows, positions 0..{k - 1} in order")
    # The final observation of each episode is the history of one more (virtual) step.
    top_rows, slot_rows = np.flatnonzero(top), np.flatnonzero(served)
    key = np.stack([col("seed")[top_rows], col("user")[top_rows]], axis=1)
    new_episode = np.r_[True, (key[1:] != key[:-1]).any(axis=1)]
    last_rows = top_rows[np.r_[new_episode[1:], True]]
    virtual = logs.iloc[last_rows].assign(step=lambda f: f["step"] + 1, click=0, item=0, watch_time=0.0, completion=0.0)
    extended = pd.concat([logs, virtual], ignore_index=True)
    examples = step_examples(extended, e.history_len, config.world.catalog.length_mean, lifetime)
    features = catalog_features(config)

    def observations(rows: np.ndarray) -> dict[str, np.ndarray]:
        """The observation at the steps of `rows` (rows of `extended`)."""
        at = examples.step_index[rows]
        source = extended.iloc[rows]
        candidates = np.stack(source["candidate_items"].to_numpy()).astype(np.int32)
        candidate_features = features[candidates]
        candidate_features[..., -1] = np.stack(source["candidate_popularity"].to_numpy())
        return dict(
            history_items=examples.history_items[at],
            history_features=examples.history_features[at],
            history_mask=examples.history_mask[at],
            candidate_items=candidates,
            candidate_features=candidate_features,
            context=examples.context[at],
        )

    slots = lambda name, dtype: col(name, dtype)[slot_rows].reshape(n, k)  # noqa: E731  [S, K]
    lists = lambda name: np.stack(logs[name].to_numpy()[top_rows])  # noqa: E731
    episode = np.cumsum(new_episode) - 1
    session_start = (col("session_start")[top_rows] > 0) if lifetime else col("step")[top_rows] == 0
    opened = np.cumsum(session_start)
    session = opened - opened[np.flatnonzero(new_episode)][episode]  # sessions opened since the episode's first
    code = lambda seeds, users: seeds * (int(col("user").max()) + 1) + users  # noqa: E731  one id per (seed, user)
    new_user = ~np.isin(code(key[:, 0], key[:, 1]), code(col("seed")[~served], col("user")[~served]))
    day = col("day", np.float64)[top_rows] if lifetime else np.full(n, np.nan)
    return LoggedSteps(
        obs=observations(top_rows),
        episode=episode,
        step=col("step")[top_rows],
        user=col("user")[top_rows],
        seed=col("seed")[top_rows],
        slate=slots("candidate", np.int64),
        items=slots("item", np.int64),
        click=slots("click", np.int8) > 0,
        slot_reward=slots("watch_time", np.float64),
        reward=col("reward", np.float64)[top_rows],
        propensity=slots("propensity", np.float64),
        slate_propensity=col("slate_propensity", np.float64)[top_rows],
        position_propensities=lists("position_propensities").reshape(n, k, e.num_candidates),
        true_expected_reward=lists("true_expected_reward").astype(np.float64),
        terminated=col("terminated")[top_rows] > 0,
        truncated=col("truncated")[top_rows] > 0,
        day=day,
        session_start=session_start,
        session=session,
        new_user=new_user,
        final_obs=observations(len(logs) + np.arange(len(last_rows))),
    )


# ----------------------------------------------------------------------------- Minari


@contextlib.contextmanager
def _datasets_root(root: Path):
    """Point Minari at `root` (it reads MINARI_DATASETS_PATH at each call), restoring it after."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def export_minari(
    steps: LoggedSteps, config: ScenarioConfig, dataset_id: str, root: str | Path, algorithm: str = "epsilon-popularity"
) -> Path:
    """Write the logged episodes as a Minari dataset `dataset_id` (e.g. "driftrec/mixed/epsilon-pop-v0")
    under `root` (Arrow format); returns its directory. Read it back with
    `MINARI_DATASETS_PATH=root` and `minari.load_dataset(dataset_id)`.

    Per episode: observations (the env's Dict observation space, T + 1 entries: the T logged
    observations and `final_obs`), actions (the env's action space: the served candidate index,
    or the K indices of the slate), rewards (minutes watched), terminations, truncations (an
    episode the collection cut off before it ended is marked truncated at its last step).
    Propensities and the ground truth stay in the Parquet logs.
    """
    import minari
    from minari.data_collector import EpisodeBuffer

    if len(steps) == 0:
        raise ValueError("export_minari: no logged steps to export")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    obs_space = observation_space(
        config, World(config.world, 1, 0).catalog.n_items, steps.obs["candidate_features"].shape[-1]
    )
    act_space = action_space(config)
    buffers = []
    for index, (start, stop) in enumerate(steps.episode_bounds()):
        observations = {
            key: np.concatenate([steps.obs[key][start:stop], steps.final_obs[key][index : index + 1]]).astype(
                obs_space[key].dtype
            )
            for key in OBS_KEYS
        }
        actions = steps.slate[start:stop]
        terminated = steps.terminated[start:stop].copy()
        truncated = steps.truncated[start:stop].copy()
        truncated[-1] |= not terminated[-1]  # cut off by the end of the collection
        buffers.append(
            EpisodeBuffer(
                id=index,
                observations=observations,
                actions=actions[:, 0] if config.env.slate_size == 1 else actions,
                rewards=list(steps.reward[start:stop]),
                terminations=list(terminated),
                truncations=list(truncated),
            )
        )
    with _datasets_root(root), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")  # metadata nags (author, env spec)
        dataset = minari.create_dataset_from_buffers(
            dataset_id,
            buffers,
            observation_space=obs_space,
            action_space=act_space,
            algorithm_name=algorithm,
            author="driftrec",
            description=f"driftrec logs of {algorithm} on the {config.name!r} scenario (agents/logs.py schema)",
            data_format="arrow",
        )
    return Path(dataset.spec.data_path).parent
