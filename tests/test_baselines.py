"""Popularity and LinUCB baselines, and the logged-data round trip they train on."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.baselines import BanditParams, LinUCBPolicy, PopularityPolicy
from agents.logs import LIST_COLUMNS, LOG_COLUMNS, EpsilonPopularity, collect_logs, load_logs, log_columns, save_logs
from agents.policy import Policy, RandomPolicy
from envs import RecVectorEnv, make_scenario
from experiments.core.harness import evaluate

TINY = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 30}}
N_ITEMS = 100


def tiny_config(slate_size: int = 1, scenario: str = "cognitive"):
    return make_scenario(scenario, {**TINY, "env": {**TINY["env"], "slate_size": slate_size}})


@pytest.fixture(scope="module")
def logs() -> pd.DataFrame:
    return collect_logs(tiny_config(), EpsilonPopularity(seed=0), n_users=32, n_steps=50)


def synthetic_logs(items: np.ndarray, watch_time: np.ndarray, click: np.ndarray | None = None) -> pd.DataFrame:
    n = len(items)
    click = (watch_time > 0).astype(np.int8) if click is None else click
    return pd.DataFrame(
        dict(
            user=np.arange(n),
            step=0,
            item=items,
            position=0,
            click=click,
            watch_time=watch_time,
            completion=0.5,
            season_sin=0.0,
            season_cos=1.0,
            progress=0.0,
            scenario="test",
            seed=0,
        )
    )[list(LOG_COLUMNS)]


def assert_valid_actions(actions: np.ndarray, n: int, slate_size: int, n_candidates: int = 8) -> None:
    actions = np.asarray(actions)
    assert actions.shape == ((n,) if slate_size == 1 else (n, slate_size))
    assert actions.dtype.kind in "iu"
    assert actions.min() >= 0 and actions.max() < n_candidates
    if slate_size > 1:
        assert all(len(set(row)) == slate_size for row in actions.tolist())


# ------------------------------------------------------------------ logs
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_logs_round_trip(logs, tmp_path, suffix):
    path = save_logs(logs, tmp_path / f"logs{suffix}")
    back = load_logs(path, n_items=N_ITEMS)
    scalars = [c for c in log_columns(lifetime=False) if c not in LIST_COLUMNS]
    assert list(back.columns) == (log_columns(lifetime=False) if suffix == ".parquet" else scalars)
    pd.testing.assert_frame_equal(back[scalars], logs[scalars], check_dtype=False)
    if suffix == ".parquet":  # arrays per row, null on the rows of the interactions users arrived with
        for name in LIST_COLUMNS:
            served = logs.step >= 0
            np.testing.assert_array_equal(np.stack(back[name][served]), np.stack(logs[name][served]))
            assert back[name][~served].isna().all()


# ------------------------------------------------------------ popularity
@pytest.mark.parametrize("signal", ["watch_time", "click"])
def test_popularity_from_logs_acts_validly(logs, signal):
    policy = PopularityPolicy.from_logs(logs, N_ITEMS, signal=signal)
    assert isinstance(policy, Policy) and policy.name == "popularity"
    expected = logs.groupby("item")[signal].sum()
    np.testing.assert_allclose(policy.item_scores[expected.index], expected.to_numpy(), rtol=1e-6)
    env = RecVectorEnv(num_envs=6, scenario=tiny_config(), seed=0)
    policy.bind(env)
    obs, _ = env.reset(seed=0)
    for _ in range(3):
        actions = policy.act(obs)
        assert_valid_actions(actions, 6, 1)
        obs, *_ = env.step(actions)


def test_popularity_picks_highest_logged_score():
    # Item i has logged watch time i: the best candidate is the one with the largest id,
    # the first such index when an item appears twice among the candidates.
    items = np.arange(N_ITEMS)
    policy = PopularityPolicy.from_logs(synthetic_logs(items, items.astype(float)), N_ITEMS)
    env = RecVectorEnv(num_envs=16, scenario=tiny_config(), seed=3)
    policy.bind(env)
    obs, _ = env.reset(seed=3)
    cand = obs["candidate_items"]
    np.testing.assert_array_equal(policy.act(obs), cand.argmax(axis=1))
    # Clicks: only one target item was ever clicked; it wins wherever it is a candidate.
    target = int(cand[0, 5])
    clicked = (items == target).astype(np.int8)
    by_click = PopularityPolicy.from_logs(synthetic_logs(items, np.ones(N_ITEMS), clicked), N_ITEMS, signal="click")
    by_click.bind(env)
    actions = by_click.act(obs)
    assert cand[0, actions[0]] == target
    has = (cand == target).any(axis=1)
    np.testing.assert_array_equal(cand[has, actions[has]], target)
    np.testing.assert_array_equal(actions[~has], 0)  # all tied at 0: the lowest index


def test_popularity_slate_is_distinct_top_k(logs):
    env = RecVectorEnv(num_envs=6, scenario=tiny_config(slate_size=3), seed=0)
    policy = PopularityPolicy.from_logs(logs, N_ITEMS)
    policy.bind(env)
    obs, _ = env.reset(seed=0)
    actions = policy.act(obs)
    assert_valid_actions(actions, 6, 3)
    scores = policy.item_scores[obs["candidate_items"]]
    chosen = np.take_along_axis(scores, actions, axis=1)
    assert np.all(np.diff(chosen, axis=1) <= 0)  # best first
    assert np.all(chosen[:, -1] >= np.sort(scores, axis=1)[:, -3])  # and the top 3


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda logs: logs.iloc[:0], "empty"),
        (lambda logs: logs.drop(columns=["watch_time"]), "missing columns"),
        (lambda logs: logs.assign(item=logs["item"].where(logs.index != 3, N_ITEMS)), "catalog"),
    ],
    ids=["empty", "missing-column", "item-out-of-catalog"],
)
def test_popularity_rejects_bad_logs(logs, bad, match):
    with pytest.raises(ValueError, match=match):
        PopularityPolicy.from_logs(bad(logs), N_ITEMS)


def test_popularity_rejects_unknown_signal(logs):
    with pytest.raises(ValueError, match="signal"):
        PopularityPolicy.from_logs(logs, N_ITEMS, signal="completion_rate")


# ---------------------------------------------------------------- LinUCB
@pytest.mark.parametrize("slate_size", [1, 3])
def test_linucb_acts_validly(slate_size):
    env = RecVectorEnv(num_envs=6, scenario=tiny_config(slate_size), seed=0)
    policy = LinUCBPolicy()
    assert isinstance(policy, Policy) and policy.name == "bandit"
    policy.bind(env)
    t = env.world.catalog.n_topics
    obs, _ = env.reset(seed=0)
    assert policy.features(obs).shape == (6, 8, 2 * t + 8)
    for _ in range(5):
        actions = policy.act(obs)
        assert_valid_actions(actions, 6, slate_size)
        next_obs, reward, terminated, truncated, info = env.step(actions)
        policy.observe(obs, actions, reward, info)
        obs = next_obs
    assert policy.n_updates > 0 and np.all(np.isfinite(policy.theta))


def test_linucb_needs_catalog():
    env = RecVectorEnv(num_envs=2, scenario=tiny_config(), seed=0)
    obs, _ = env.reset(seed=0)
    with pytest.raises(RuntimeError, match="bind"):
        LinUCBPolicy().act(obs)


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(alpha=-1.0), "alpha"),
        (dict(alpha=float("nan")), "alpha"),
        (dict(alpha="1"), "alpha"),
        (dict(ridge=0.0), "ridge"),
        (dict(ridge=float("inf")), "ridge"),
    ],
)
def test_linucb_rejects_bad_parameters(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LinUCBPolicy(BanditParams(**kwargs))


def synthetic_obs(rng: np.random.Generator, n: int, c: int, h: int, n_items: int, f: int):
    """A random observation dict in the env's layout (features deliberately not simplex-
    constrained, so every coordinate of x is identifiable)."""
    return {
        "history_items": rng.integers(0, n_items, (n, h)).astype(np.int32),
        "history_features": rng.random((n, h, 5)).round().astype(np.float32),
        "history_mask": (np.arange(h)[None, :] >= rng.integers(0, h, (n, 1))).astype(np.float32),
        "candidate_items": rng.integers(0, n_items, (n, c)).astype(np.int32),
        "candidate_features": rng.random((n, c, f)).astype(np.float32),
        "context": rng.uniform(-1, 1, (n, 3)).astype(np.float32),
    }


def test_linucb_theta_converges_to_linear_reward():
    rng = np.random.default_rng(0)
    t, n_items, n, c, h = 3, 40, 32, 6, 5
    table = rng.random((n_items, t + 4))
    policy = LinUCBPolicy(item_features=table, n_topics=t)
    w = rng.normal(size=policy.dim)
    errors = []
    for step in range(200):
        obs = synthetic_obs(rng, n, c, h, n_items, t + 4)
        actions = policy.act(obs)
        x = policy.features(obs)[np.arange(n), actions]
        reward = x @ w + 0.1 * rng.standard_normal(n)
        policy.observe(obs, actions, reward, {"position": np.zeros(n, dtype=int), "served": np.ones(n, dtype=bool)})
        if step in (1, 199):
            errors.append(np.linalg.norm(policy.theta - w))
    assert errors[1] < 0.5 * errors[0]
    assert errors[1] < 0.1 * np.linalg.norm(w)


def test_linucb_credits_clicked_slot_and_skips_unserved_rows():
    rng = np.random.default_rng(1)
    t, n_items, n, c, h = 3, 40, 4, 6, 5
    policy = LinUCBPolicy(item_features=rng.random((n_items, t + 4)), n_topics=t)
    policy.slate_size = 3
    obs = synthetic_obs(rng, n, c, h, n_items, t + 4)
    actions = np.tile([4, 1, 2], (n, 1))
    # Row 0 clicked slot 2 (candidate 2), row 1 slot 0 (candidate 4), rows 2-3 no click.
    info = {"position": np.array([2, 0, -1, -1]), "served": np.ones(n, dtype=bool)}
    rewards = np.array([5.0, 3.0, 0.0, 0.0])
    policy.observe(obs, actions, rewards, info)
    x = policy.features(obs)
    assert policy.n_updates == n * 3
    np.testing.assert_allclose(policy.b, 5.0 * x[0, 2] + 3.0 * x[1, 4])
    # Row 1 is being reset (its action was ignored): it is skipped.
    info = {"position": np.full(n, -1), "served": np.array([True, False, True, True])}
    policy.observe(obs, actions, np.zeros(n), info)
    assert policy.n_updates == n * 3 + (n - 1) * 3
    policy.reset()
    assert policy.n_updates == 0 and not policy.b.any()


def test_linucb_beats_random_in_the_harness():
    cfg = tiny_config()
    bandit = evaluate(LinUCBPolicy(), cfg, n_users=64, seed=0).metrics
    random = evaluate(RandomPolicy(seed=0), cfg, n_users=64, seed=0).metrics
    # Measured: ~43 vs ~21 minutes per session (95% CI half-widths ~4 and ~2).
    assert bandit["return_mean"] > random["return_mean"] + random["return_ci95"] + bandit["return_ci95"]
