"""Fast tests of agents.sb3_agent (stable-baselines3 PPO) with tiny configs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from agents.base import TIMING_KEYS
from agents.model import GreedyPolicy
from agents.registry import get_agent
from agents.sb3_agent import SB3PPOAgent, SB3PPOParams
from envs.config import make_scenario
from envs.vector import RecVectorEnv
from simulator.params import apply_overrides

SCENARIO = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 20}}
MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2}
ALGO = {"num_envs": 8, "n_steps": 16, "batch_size": 64, "n_epochs": 1}
STEPS_PER_ITER = ALGO["num_envs"] * ALGO["n_steps"]


def scenario(**env):
    overrides = {**SCENARIO, "env": {**SCENARIO["env"], **env}}
    return make_scenario("mixed", overrides)


def make_agent(seed: int = 0, **env) -> SB3PPOAgent:
    return SB3PPOAgent(scenario(**env), SB3PPOParams(**ALGO), seed=seed, model=MODEL)


@pytest.fixture(scope="module")
def trained():
    """An agent after two iterations, with both iterations' metrics."""
    agent = make_agent()
    assert agent.env_steps == 0
    first = agent.train_iteration()
    after_first = agent.env_steps
    second = agent.train_iteration()
    yield agent, [first, second], after_first
    agent.close()


def test_train_iterations_report_finite_losses_and_count_steps(trained):
    agent, metrics, after_first = trained
    assert after_first == STEPS_PER_ITER
    assert agent.env_steps == 2 * STEPS_PER_ITER
    for m in metrics:
        for key in ("policy_loss", "value_loss", "entropy", "approx_kl", "clip_fraction", "env_steps_per_s"):
            assert math.isfinite(m[key]), (key, m)
        assert m["value_loss"] > 0 and 0 < m["entropy"] <= math.log(8) + 1e-5
        assert all(isinstance(v, float) for v in m.values())
    assert metrics[1]["env_steps"] == 2 * STEPS_PER_ITER
    # The two updates differ: the logger values are this iteration's, not a stale copy.
    assert metrics[0]["value_loss"] != metrics[1]["value_loss"]


def test_policy_acts_validly_on_vector_env_observations(trained):
    agent, _, _ = trained
    env = RecVectorEnv(num_envs=5, scenario=scenario(), seed=0)
    obs, _ = env.reset(seed=0)
    policy = agent.policy()
    assert isinstance(policy, GreedyPolicy) and policy.name == "sb3-ppo"
    actions = policy.act(obs)
    assert actions.shape == (5,) and actions.dtype.kind == "i"
    assert actions.min() >= 0 and actions.max() < 8
    env.step(actions)  # the env accepts them


def test_save_restore_gives_identical_greedy_actions(trained, tmp_path):
    agent, _, _ = trained
    agent.save(tmp_path)
    assert (tmp_path / "sb3_ppo.zip").is_file()
    fresh = make_agent(seed=1)  # different initial weights
    obs, _ = RecVectorEnv(num_envs=16, scenario=scenario(), seed=3).reset(seed=3)
    fresh.restore(tmp_path)
    np.testing.assert_array_equal(fresh.policy().act(obs), agent.policy().act(obs))
    assert fresh.env_steps == agent.env_steps
    fresh.train_iteration()  # training continues from the restored state
    assert fresh.env_steps == agent.env_steps + STEPS_PER_ITER


def test_restore_missing_dir_names_path(tmp_path):
    missing = tmp_path / "nowhere"
    agent = make_agent()
    with pytest.raises(ValueError, match="nowhere"):
        agent.restore(missing)


def test_slate_scenario_trains_and_rejects_single_item_checkpoint(trained, tmp_path):
    agent = make_agent(slate_size=2)
    m = agent.train_iteration()
    assert math.isfinite(m["policy_loss"]) and math.isfinite(m["entropy"])
    assert agent.env_steps == STEPS_PER_ITER
    obs, _ = RecVectorEnv(num_envs=4, scenario=scenario(slate_size=2), seed=0).reset(seed=0)
    slate = agent.policy().act(obs)
    assert slate.shape == (4, 2) and np.all(slate[:, 0] != slate[:, 1])
    # A checkpoint of the single-item agent has another action space.
    trained[0].save(tmp_path)
    with pytest.raises(ValueError, match="incompatible"):
        agent.restore(tmp_path)


def test_bad_algo_key_and_value_are_rejected():
    with pytest.raises(ValueError, match="algo.n_stepz"):
        get_agent("sb3-ppo").make_params({"n_stepz": 8})
    with pytest.raises(ValueError, match="algo.batch_size"):
        apply_overrides(SB3PPOParams(), {"batch_size": 1}, "algo")
    with pytest.raises(ValueError, match="algo.gamma"):
        SB3PPOParams(gamma=1.5)


def test_same_seed_same_metrics():
    def run():
        agent = make_agent(seed=7)
        m = agent.train_iteration()
        weights = torch.cat([p.detach().flatten() for p in agent.model.policy.parameters()])
        return {k: v for k, v in m.items() if k not in TIMING_KEYS}, weights

    (m1, w1), (m2, w2) = run(), run()
    assert m1.keys() == m2.keys()
    for key in m1:
        assert m1[key] == m2[key] or (math.isnan(m1[key]) and math.isnan(m2[key])), key
    assert torch.equal(w1, w2)


def test_hparams_lists_params_and_model():
    agent = make_agent()
    h = agent.hparams()
    assert h["num_envs"] == 8 and h["batch_size"] == 64 and h["model.d_model"] == 16
