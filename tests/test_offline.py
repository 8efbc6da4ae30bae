"""Offline data (agents.logs offline columns, agents.offline): propensities, observations rebuilt
from logs, old logs, the Minari round trip."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agents.baselines import PopularityPolicy
from agents.logs import (
    LOG_COLUMNS,
    OFFLINE_LOG_COLUMNS,
    EpsilonPopularity,
    collect_logs,
    load_logs,
    save_logs,
    validate_offline_logs,
)
from agents.offline import OBS_KEYS, export_minari, logged_steps
from envs import make_scenario
from experiments.core.harness import evaluate

TINY = {"catalog": {"n_items": 100}, "env": {"num_candidates": 6, "history_len": 8, "max_steps": 12}}
LIFE = {
    "catalog": {"n_items": 150},
    "env": {"num_candidates": 6, "history_len": 10, "max_steps": 300},
    "lifetime": {"horizon_days": 3.0},
    "users": {"past_interactions": 3},
}


def tiny(name: str = "mixed", slate_size: int = 1):
    return make_scenario(name, {**TINY, "env": {**TINY["env"], "slate_size": slate_size}})


class RecordingLogger(EpsilonPopularity):
    """The logging policy, recording every observation it acts on under (log user id, episode step)."""

    def bind(self, env) -> None:
        super().bind(env)
        self.env, self.seen = env, {}
        self.user, self.prev_step, self.next_user = np.arange(env.num_envs), None, env.num_envs

    def act(self, obs):
        step = self.env.world.state.episode_step.copy()
        if self.prev_step is not None:  # a slot whose step count went back holds the next user id
            for slot in np.flatnonzero(step < self.prev_step):
                self.user[slot], self.next_user = self.next_user, self.next_user + 1
        self.prev_step = step
        for slot in range(len(step)):
            self.seen[(int(self.user[slot]), int(step[slot]))] = {k: v[slot].copy() for k, v in obs.items()}
        return super().act(obs)


@pytest.fixture(scope="module")
def slate_logs():
    """Logs of a slate-of-2 scenario with the observations the logging policy saw."""
    logger = RecordingLogger(epsilon=0.4, seed=3)
    cfg = tiny("mixed", slate_size=2)
    return cfg, collect_logs(cfg, logger, n_users=8, n_steps=30, seed=5), logger


def test_epsilon_popularity_propensities_are_exact():
    """Closed forms against the empirical frequencies of 40,000 draws on one observation."""
    cfg = tiny("stationary", slate_size=2)
    from envs import RecVectorEnv

    env = RecVectorEnv(num_envs=1, scenario=cfg, seed=0)
    obs, _ = env.reset(seed=0)
    draws = 40_000
    batch = {k: np.repeat(v, draws, axis=0) for k, v in obs.items()}
    policy = EpsilonPopularity(epsilon=0.3, seed=1)
    policy.bind(env)
    slates = policy.act(batch)  # [draws, 2]
    marginal = policy.position_probabilities(obs)[0]  # [K, C]
    np.testing.assert_allclose(marginal.sum(axis=1), 1.0)
    c = cfg.env.num_candidates
    for pos in range(2):
        freq = np.bincount(slates[:, pos], minlength=c) / draws
        np.testing.assert_allclose(freq, marginal[pos], atol=0.01)
    greedy = policy.greedy(obs)
    p_greedy = policy.slate_probability(obs, greedy)[0]
    assert p_greedy == pytest.approx(0.7 + 0.3 / (c * (c - 1)))
    assert (slates == greedy).all(axis=1).mean() == pytest.approx(p_greedy, abs=0.01)
    other = np.array([[greedy[0, 1], greedy[0, 0]]])
    assert policy.slate_probability(obs, other)[0] == pytest.approx(0.3 / (c * (c - 1)))


def test_offline_columns_and_rebuilt_observations_match_the_env(slate_logs):
    cfg, logs, logger = slate_logs
    assert set(LOG_COLUMNS + OFFLINE_LOG_COLUMNS) <= set(logs.columns)
    steps = logged_steps(logs, cfg)
    assert len(steps) == len(logs[logs.step >= 0]) // 2
    for i in range(len(steps)):
        seen = logger.seen[(int(steps.user[i]), int(steps.step[i]))]
        for key in OBS_KEYS:
            np.testing.assert_array_equal(steps.obs[key][i], seen[key], err_msg=key)
        probs = logger.position_probabilities({k: v[None] for k, v in seen.items()})[0]
        np.testing.assert_array_equal(steps.position_propensities[i], probs)
        assert steps.propensity[i].tolist() == [probs[k, steps.slate[i, k]] for k in range(2)]
        np.testing.assert_array_equal(steps.items[i], seen["candidate_items"][steps.slate[i]])
    np.testing.assert_allclose(steps.reward, steps.slot_reward.sum(axis=1))
    # The stored history ids are the observation's.
    stored = np.stack(logs[(logs.step >= 0) & (logs.position == 0)].history_items.to_numpy())
    np.testing.assert_array_equal(stored, steps.obs["history_items"])
    # Episode ends: every episode that ended is marked on its last step, and only there.
    for e, (start, stop) in enumerate(steps.episode_bounds()):
        ended = steps.terminated[start:stop] | steps.truncated[start:stop]
        assert not ended[:-1].any()
        assert (steps.step[start:stop] == np.arange(stop - start)).all()
        # The final observation's history is the last one shifted by the last step's entry.
        np.testing.assert_array_equal(
            steps.final_obs["history_items"][e][:-1], steps.obs["history_items"][stop - 1][1:]
        )
    assert (steps.terminated | steps.truncated).any()


def test_lifetime_logs_rebuild_observations():
    logger = RecordingLogger(epsilon=0.5, seed=0)
    cfg = make_scenario("lifetime", LIFE)
    logs = collect_logs(cfg, logger, n_users=4, n_steps=40, seed=2)
    assert "session_end" in logs.columns
    steps = logged_steps(logs, cfg)
    for i in range(0, len(steps), 7):
        seen = logger.seen[(int(steps.user[i]), int(steps.step[i]))]
        for key in OBS_KEYS:
            np.testing.assert_array_equal(steps.obs[key][i], seen[key], err_msg=key)
    assert np.isfinite(steps.day).all()


def test_logs_match_the_harness_users_and_reward():
    """The first episode of slot i is user i of the harness with the same seed: same returns."""
    cfg = tiny("mixed")
    logs = collect_logs(cfg, EpsilonPopularity(0.3, seed=7), n_users=16, n_steps=cfg.env.max_steps + 1, seed=4)
    served = logs[(logs.step >= 0) & (logs.user < 16)]
    truth = evaluate(EpsilonPopularity(0.3, seed=7), cfg, n_users=16, seed=4)
    np.testing.assert_allclose(served.groupby("user").reward.sum().to_numpy(), truth.episodes.episode_return, rtol=1e-6)


def test_old_logs_still_train_and_offline_use_names_missing_columns(tmp_path):
    cfg = tiny("stationary")
    logs = collect_logs(cfg, EpsilonPopularity(seed=0), n_users=8, n_steps=10)
    old = logs[list(LOG_COLUMNS)]
    path = save_logs(old, tmp_path / "old.parquet")
    back = load_logs(path, n_items=100)
    assert PopularityPolicy.from_logs(back, 100).item_scores.sum() > 0
    with pytest.raises(ValueError, match=r"missing the offline columns \['candidate'") as err:
        validate_offline_logs(back, cfg)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="missing the offline columns"):  # a CSV leaves the list columns out
        validate_offline_logs(load_logs(save_logs(logs, tmp_path / "logs.csv")), cfg)
    with pytest.raises(ValueError, match="no served step"):
        validate_offline_logs(logs[logs.step < 0], cfg)
    with pytest.raises(ValueError, match="needs 8"):
        validate_offline_logs(logs, make_scenario("stationary", {**TINY, "env": {**TINY["env"], "num_candidates": 8}}))


def test_parquet_round_trip_keeps_the_offline_columns(tmp_path, slate_logs):
    cfg, logs, _ = slate_logs
    back = load_logs(save_logs(logs, tmp_path / "logs.parquet"))
    a, b = logged_steps(logs, cfg), logged_steps(back, cfg)
    for key in OBS_KEYS:
        np.testing.assert_array_equal(a.obs[key], b.obs[key])
    np.testing.assert_array_equal(a.position_propensities, b.position_propensities)


def test_minari_round_trip(tmp_path, slate_logs):
    minari = pytest.importorskip("minari")
    for cfg, logs in (slate_logs[:2], (tiny("stationary"), None)):
        if logs is None:
            logs = collect_logs(cfg, EpsilonPopularity(seed=1), n_users=4, n_steps=20, seed=3)
        steps = logged_steps(logs, cfg)
        dataset_id = f"driftrec/test/k{cfg.env.slate_size}-v0"
        export_minari(steps, cfg, dataset_id, tmp_path)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MINARI_DATASETS_PATH", str(tmp_path))
            dataset = minari.load_dataset(dataset_id)
            episodes = list(dataset.iterate_episodes())
        assert len(episodes) == steps.n_episodes and dataset.total_steps == len(steps)
        for e, ((start, stop), episode) in enumerate(zip(steps.episode_bounds(), episodes)):
            for key in OBS_KEYS:
                np.testing.assert_array_equal(episode.observations[key][:-1], steps.obs[key][start:stop])
                np.testing.assert_array_equal(episode.observations[key][-1], steps.final_obs[key][e])
            actions = steps.slate[start:stop]
            np.testing.assert_array_equal(episode.actions, actions[:, 0] if cfg.env.slate_size == 1 else actions)
            np.testing.assert_allclose(episode.rewards, steps.reward[start:stop])
            np.testing.assert_array_equal(episode.terminations, steps.terminated[start:stop])
            assert episode.truncations[-1] == (not steps.terminated[stop - 1])
        assert math.isclose(sum(float(ep.rewards.sum()) for ep in episodes), float(steps.reward.sum()), rel_tol=1e-6)


def test_new_users_and_sessions_are_marked():
    cfg = make_scenario("lifetime", {**LIFE, "users": {"past_interactions": 0}})
    steps = logged_steps(collect_logs(cfg, EpsilonPopularity(seed=0), n_users=4, n_steps=60, seed=2), cfg)
    assert steps.new_user.all()
    assert steps.session[0] == 0 and steps.session.max() >= 1  # lives of several sessions
    assert (np.diff(steps.session)[np.diff(steps.episode) == 0] >= 0).all()
    returning = logged_steps(collect_logs(tiny("stationary"), EpsilonPopularity(seed=0), 4, 10), tiny("stationary"))
    assert not returning.new_user.any() and (returning.session == 0).all()


def test_random_policy_reports_its_uniform_distribution():
    from agents.policy import RandomPolicy

    cfg = tiny("stationary", slate_size=2)
    logs = collect_logs(cfg, RandomPolicy(seed=0), n_users=4, n_steps=5)
    steps = logged_steps(logs, cfg)
    np.testing.assert_allclose(steps.position_propensities, 1 / 6)
    np.testing.assert_allclose(steps.slate_propensity, 1 / 30)
