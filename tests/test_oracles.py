"""Baselines and oracles behind the Policy protocol, and the evaluation harness."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.oracles import MyopicOracle, SessionOracle, watch_per_budget
from agents.policy import Policy, RandomPolicy, slate_from_scores
from envs import RecVectorEnv
from experiments.core.harness import evaluate

POLICIES = [lambda: RandomPolicy(seed=0), MyopicOracle, SessionOracle]


@pytest.mark.parametrize("slate_size", [1, 3])
@pytest.mark.parametrize("make_policy", POLICIES, ids=["random", "myopic", "session"])
def test_policies_act_validly(make_cfg, make_policy, slate_size):
    cfg = make_cfg("mixed", {"env": {"slate_size": slate_size}})
    env = RecVectorEnv(num_envs=6, scenario=cfg)
    policy = make_policy()
    assert isinstance(policy, Policy) and isinstance(policy.name, str)
    policy.bind(env)
    obs, _ = env.reset(seed=0)
    for _ in range(5):
        actions = np.asarray(policy.act(obs))
        expected = (6,) if slate_size == 1 else (6, slate_size)
        assert actions.shape == expected
        assert actions.dtype.kind in "iu"
        assert actions.min() >= 0 and actions.max() < 8
        if slate_size > 1:
            assert all(len(set(row)) == slate_size for row in actions.tolist())
        assert env.action_space.contains(actions.astype(np.int64))
        obs, *_ = env.step(actions)


@pytest.mark.parametrize("cls", [MyopicOracle, SessionOracle])
def test_oracles_need_bind(make_cfg, cls):
    env = RecVectorEnv(num_envs=2, scenario=make_cfg("stationary"))
    obs, _ = env.reset(seed=0)
    with pytest.raises(RuntimeError, match="bind"):
        cls().act(obs)


def test_myopic_oracle_picks_highest_expected_engagement(make_cfg):
    env = RecVectorEnv(num_envs=8, scenario=make_cfg("cognitive"))
    oracle = MyopicOracle()
    oracle.bind(env)
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(6):
        action = oracle.act(obs)
        ee = env.world.expected_engagement(obs["candidate_items"])
        assert ee.shape == (8, 8)
        np.testing.assert_array_equal(ee[np.arange(8), action], ee.max(axis=1))
        obs, *_ = env.step(rng.integers(0, 8, size=8))  # move the state with other actions


def test_myopic_oracle_slate_is_top_k_by_engagement(make_cfg):
    env = RecVectorEnv(num_envs=5, scenario=make_cfg("mixed", {"env": {"slate_size": 3}}))
    oracle = MyopicOracle()
    oracle.bind(env)
    obs, _ = env.reset(seed=2)
    action = oracle.act(obs)
    ee = env.world.expected_engagement(obs["candidate_items"])
    picked = np.take_along_axis(ee, action, axis=1)
    assert np.all(np.diff(picked, axis=1) <= 0)  # best first
    np.testing.assert_allclose(picked, -np.sort(-ee, axis=1)[:, :3])


def test_session_oracle_maximises_watch_per_budget(make_cfg):
    env = RecVectorEnv(num_envs=6, scenario=make_cfg("stationary"))
    oracle = SessionOracle()
    oracle.bind(env)
    obs, _ = env.reset(seed=3)
    action = oracle.act(obs)
    score = watch_per_budget(env.world, obs["candidate_items"])
    np.testing.assert_array_equal(score[np.arange(6), action], score.max(axis=1))
    assert np.all(np.isfinite(score)) and np.all(score >= 0)


@pytest.mark.parametrize(
    "response", [{}, {"browse_cost": 2.0, "quality_refund": 0.0}, {"browse_cost": 0.1, "quality_refund": 1.0}]
)
def test_session_oracle_cost_is_the_simulators_budget_cost(make_cfg, response):
    """The oracle's score is expected watch / the simulator's own budget cost of it, whatever the costs."""
    from simulator import response as sim_response

    env = RecVectorEnv(num_envs=6, scenario=make_cfg("mixed", {"response": response, "env": {"slate_size": 3}}))
    oracle = SessionOracle()
    oracle.bind(env)
    obs, _ = env.reset(seed=5)
    for _ in range(3):
        items = obs["candidate_items"].astype(np.int64)
        watch = env.world.expected_engagement(items)
        value = sim_response.personal_value(
            env.world.slate_fit(items), env.world.catalog.quality[items], env.world.config.response
        )
        cost = sim_response.budget_cost(watch, value, env.world.config.response)
        np.testing.assert_array_equal(watch_per_budget(env.world, items), watch / cost)
        action = oracle.act(obs)
        np.testing.assert_array_equal(action, slate_from_scores(watch / cost, 3))
        obs, *_ = env.step(action)


def test_oracle_follows_a_changed_budget_cost(make_cfg, monkeypatch):
    """One source for the dynamics: change the simulator's cost, and the step and the oracle both follow."""
    from simulator import response as sim_response

    def flat_cost(watch_time, quality, params):  # every minute costs a minute, quality or not
        return (np.float32(params.browse_cost) + watch_time + 0.0 * quality).astype(np.float32)

    env = RecVectorEnv(num_envs=6, scenario=make_cfg("stationary"))
    obs, _ = env.reset(seed=3)
    items = obs["candidate_items"].astype(np.int64)
    before = watch_per_budget(env.world, items)
    monkeypatch.setattr(sim_response, "budget_cost", flat_cost)
    watch = env.world.expected_engagement(items)
    after = watch_per_budget(env.world, items)
    np.testing.assert_array_equal(after, watch / (np.float32(0.5) + watch))
    assert not np.allclose(after, before)
    budget = env.world.state.budget.copy()
    _, reward, *_ = env.step(np.zeros(6, dtype=np.int64))
    # float32 budgets near 60 minutes resolve about 4e-6 minutes
    np.testing.assert_allclose(budget - env.world.state.budget, 0.5 + reward, rtol=0, atol=1e-5)


def test_expected_engagement_matches_simulated_watch_time(make_cfg):
    """The oracles' model: expected_engagement agrees with the mean simulated watch time."""
    cfg = make_cfg("stationary").world
    from simulator import World

    w = World(cfg, 4000, seed=0)
    item = np.full((4000, 1), 7, dtype=np.int64)
    ee = w.expected_engagement(item)[:, 0].mean()
    watch = w.step(item).watch_time.mean()
    assert watch == pytest.approx(ee, rel=0.1)


def test_slate_from_scores():
    scores = np.array([[0.1, 0.9, 0.5, 0.7], [3.0, 2.0, 1.0, 0.0]])
    np.testing.assert_array_equal(slate_from_scores(scores, 1), [1, 0])
    np.testing.assert_array_equal(slate_from_scores(scores, 3), [[1, 3, 2], [0, 1, 2]])


def test_random_policy_is_seeded(make_cfg):
    env = RecVectorEnv(num_envs=16, scenario=make_cfg("stationary"))
    obs, _ = env.reset(seed=0)
    a = RandomPolicy(seed=5).act(obs)
    np.testing.assert_array_equal(a, RandomPolicy(seed=5).act(obs))
    assert not np.array_equal(a, RandomPolicy(seed=6).act(obs))


# ------------------------------------------------------------------ harness
@pytest.fixture(scope="module")
def eval_cfg(make_cfg):
    return make_cfg("cognitive")


def test_myopic_oracle_beats_random(eval_cfg):
    random = evaluate(RandomPolicy(seed=0), eval_cfg, n_users=64, seed=3).metrics
    myopic = evaluate(MyopicOracle(), eval_cfg, n_users=64, seed=3).metrics
    assert random["return_mean"] < myopic["return_mean"]
    # Not within noise: separated by more than the two CIs.
    assert myopic["return_mean"] - random["return_mean"] > random["return_ci95"] + myopic["return_ci95"]
    assert myopic["ctr"] > random["ctr"]


@pytest.mark.parametrize("make_policy", POLICIES, ids=["random", "myopic", "session"])
def test_evaluate_is_reproducible(eval_cfg, make_policy):
    a = evaluate(make_policy(), eval_cfg, n_users=64, seed=7)
    b = evaluate(make_policy(), eval_cfg, n_users=64, seed=7)
    assert a.metrics == b.metrics
    pd.testing.assert_frame_equal(a.episodes, b.episodes)
    c = evaluate(make_policy(), eval_cfg, n_users=64, seed=8)
    assert c.metrics["return_mean"] != a.metrics["return_mean"]


def test_evaluate_metrics_are_well_formed(make_cfg):
    cfg = make_cfg("mixed", {"env": {"slate_size": 3, "max_steps": 20}})
    ev = evaluate(RandomPolicy(seed=1), cfg, n_users=32, seed=0)
    m = ev.metrics
    assert set(m) == {
        "return_mean",
        "return_ci95",
        "ctr",
        "session_length",
        "satisfaction_end",
        "consumption_entropy",
        "slate_diversity",
        "coverage",
        "homogenisation",
        "homogenisation_trend",
    }
    assert all(np.isfinite(v) for v in m.values())
    assert 0.0 <= m["ctr"] <= 1.0 and 0.0 < m["coverage"] <= 1.0
    assert 1.0 <= m["session_length"] <= 20.0
    assert 0.0 <= m["satisfaction_end"] <= 1.0
    assert 0.0 < m["slate_diversity"] <= 1.0
    assert len(ev.episodes) == 32 and ev.episodes.session_length.max() <= 20
    assert m["return_mean"] == pytest.approx(ev.episodes.episode_return.mean())
    assert np.all(ev.episodes.clicks <= ev.episodes.session_length)
    # Timeline: one row per step, consumed topic shares sum to 1 where anything was clicked.
    n_topics = cfg.world.catalog.n_topics
    assert 1.0 / n_topics - 1e-9 <= m["homogenisation"] <= 1.0
    assert len(ev.timeline) == ev.episodes.session_length.max()
    shares = ev.timeline[[f"share_{t}" for t in range(n_topics)]].to_numpy()
    clicked = ev.timeline.clicks.to_numpy() > 0
    np.testing.assert_allclose(shares[clicked].sum(axis=1), 1.0, rtol=1e-6)
    assert ev.timeline.clicks.sum() == ev.episodes.clicks.sum()
