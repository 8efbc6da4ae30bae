"""Gymnasium single and vector envs, the SB3 adapter, configs and presets, action checking."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from envs import PRESETS, RecEnv, RecVectorEnv, make_scenario, parallel
from envs.candidates import CandidateIndex, sample_candidates
from envs.core import days_ago, dedupe_slates
from envs.sb3 import SB3VecEnv


def _assert_obs_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def _obs_differ(a: dict, b: dict) -> bool:
    return any(not np.array_equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------- env checkers
@pytest.mark.parametrize("preset", list(PRESETS))
def test_gymnasium_env_checker_passes_for_every_preset(preset, tiny):
    env = gym.make(envs.ENV_ID, scenario=preset, overrides=tiny)
    assert isinstance(env.unwrapped, RecEnv)
    check_env(env.unwrapped, skip_render_check=True)


def test_gymnasium_env_checker_passes_for_slates(tiny_overrides):
    env = gym.make(envs.ENV_ID, scenario="mixed", overrides=tiny_overrides({"env": {"slate_size": 3}}))
    assert isinstance(env.action_space, gym.spaces.MultiDiscrete)
    assert tuple(env.action_space.nvec) == (8, 8, 8)
    check_env(env.unwrapped, skip_render_check=True)


def test_sb3_env_checker_passes_on_single_env(tiny):
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unconventional shape.*")
        sb3_check_env(RecEnv("cognitive", tiny, seed=0), warn=True)


def test_observation_space_is_a_dict_of_boxes(make_cfg):
    env = RecEnv(make_cfg("mixed"))
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    assert all(isinstance(s, gym.spaces.Box) for s in space.spaces.values())
    assert space["history_items"].shape == (8,) and space["candidate_items"].shape == (8,)
    assert space["history_mask"].shape == (8,)


# ------------------------------------------------------------ single env
def test_single_env_episode_semantics(tiny_overrides):
    env = RecEnv(
        "stationary",
        tiny_overrides(
            {
                "env": {"max_steps": 6},
                "users": {"budget_mean": 1e4, "past_interactions": 3},
                "response": {"leave_max": 0.0},
            }
        ),
    )
    obs, info = env.reset(seed=0)
    assert obs["history_mask"].sum() == 3.0 and info == {}  # the user arrives with 3 past interactions
    for t in range(1, 7):
        obs, reward, terminated, truncated, info = env.step(int(t % 8))
        assert reward == pytest.approx(info["watch_time"]) and reward >= 0.0
        assert obs["history_mask"].sum() == min(3 + t, 8)
        assert obs["history_features"][-1, 0] == float(info["clicked"])
        if info["clicked"]:
            assert obs["history_items"][-1] == info["item"]
        assert not terminated
        assert truncated == (t == 6)
        assert obs["context"][2] == pytest.approx(t / 6)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_single_env_history_records_top_item_without_click(tiny_overrides):
    # Items worth nothing to choose, and the outside option at its top: no click.
    no_pull = {"no_click_utility": 8.0, "fit_weight": 0.0, "attractiveness_weight": 0.0}
    env = RecEnv("stationary", tiny_overrides({"response": no_pull}))
    obs, _ = env.reset(seed=1)
    top = obs["candidate_items"][3]
    obs, reward, *_, info = env.step(3)
    assert not info["clicked"] and reward == 0.0 and info["item"] == -1
    assert obs["history_items"][-1] == top


# --------------------------------------------------------------- vector env
def _make_vec(n, scenario="mixed", overrides=None, **kw):
    return gym.make_vec(
        envs.ENV_ID, num_envs=n, vectorization_mode="vector_entry_point", scenario=scenario, overrides=overrides, **kw
    )


def test_make_vec_gives_the_native_batched_env(tiny):
    venv = _make_vec(5, overrides=tiny)
    assert isinstance(venv, RecVectorEnv) and venv.num_envs == 5
    assert venv.metadata["autoreset_mode"] == gym.vector.AutoresetMode.NEXT_STEP
    obs, _ = venv.reset(seed=0)
    assert venv.observation_space.contains(obs)
    for key, space in venv.observation_space.spaces.items():
        assert obs[key].shape == space.shape and obs[key].dtype == space.dtype, key
    for _ in range(3):
        actions = venv.action_space.sample()
        assert actions.shape == (5,)
        obs, reward, terminated, truncated, info = venv.step(actions)
        assert venv.observation_space.contains(obs)
        assert reward.shape == terminated.shape == truncated.shape == (5,)
        assert terminated.dtype == bool and truncated.dtype == bool
    assert np.all(venv.world.state.step == 3)  # all 5 users advanced in one call each time


def test_vector_env_slate_actions(tiny_overrides):
    venv = _make_vec(4, overrides=tiny_overrides({"env": {"slate_size": 3}}))
    obs, _ = venv.reset(seed=0)
    assert venv.action_space.shape == (4, 3)
    _, reward, *_ = venv.step(np.array([[0, 0, 0], [1, 2, 3], [7, 6, 5], [2, 2, 1]]))
    assert reward.shape == (4,)


def test_next_step_autoreset(tiny_overrides):
    venv = RecVectorEnv(
        num_envs=6,
        scenario="cognitive",
        overrides=tiny_overrides({"env": {"max_steps": 5}, "users": {"past_interactions": 2}}),
    )
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    done_seen = False
    for _ in range(25):
        obs, reward, terminated, truncated, _ = venv.step(rng.integers(0, 8, size=6))
        done = terminated | truncated
        if not done.any():
            continue
        done_seen = True
        before = {k: v.copy() for k, v in obs.items()}
        # The action of a resetting slot is ignored (even an invalid one).
        actions = rng.integers(0, 8, size=6)
        actions[done] = 99
        obs, reward, terminated, truncated, _ = venv.step(actions)
        assert np.all(reward[done] == 0.0)
        assert not terminated[done].any() and not truncated[done].any()
        assert np.all(obs["history_mask"][done].sum(axis=1) == 2.0)  # the new user's past only
        assert np.all(obs["context"][done, 2] == 0.0)
        assert np.all(venv.world.state.step[done] == 0)
        # Slots that were not done kept going.
        live = ~done
        assert np.all(
            obs["history_mask"][live].sum(axis=1) >= np.minimum(before["history_mask"][live].sum(axis=1) + 1, 8)
        )
    assert done_seen


def test_partial_reset_starts_new_users_in_the_masked_slots_only(tiny_overrides):
    """Gymnasium's `reset(options={"reset_mask": mask})`: the masked slots start new users (their past
    only, step 0), a pending autoreset there is cleared, and the other slots keep their observations."""
    venv = RecVectorEnv(
        num_envs=6,
        scenario="cognitive",
        overrides=tiny_overrides({"env": {"max_steps": 5}, "users": {"past_interactions": 2}}),
    )
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    for _ in range(3):
        before, *_ = venv.step(rng.integers(0, 8, size=6))
    mask = np.array([True, False, True, False, False, False])
    venv._autoreset[0] = True  # slot 0 as if its user had just ended
    obs, info = venv.reset(options={"reset_mask": mask})
    assert info == {} and not venv._autoreset[0]
    assert np.all(obs["history_mask"][mask].sum(axis=1) == 2.0) and np.all(venv.world.state.step[mask] == 0)
    for key, value in before.items():
        np.testing.assert_array_equal(obs[key][~mask], value[~mask], err_msg=key)
    assert venv.step(rng.integers(0, 8, size=6))[4]["served"].all()  # slot 0 is served, not reset again


@pytest.mark.parametrize(
    "options, words",
    [
        ({"reset_mask": np.ones(5, dtype=bool)}, r"bool array of shape \(6,\)"),
        ({"reset_mask": np.ones(6, dtype=int)}, "bool array"),
        ({"mask": np.ones(6, dtype=bool)}, "unknown option 'mask'"),
    ],
)
def test_a_bad_partial_reset_is_one_line_naming_it(tiny, options, words):
    venv = RecVectorEnv(num_envs=6, overrides=tiny, seed=0)
    with pytest.raises(ValueError, match=words) as error:
        venv.reset(options=options)
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="cannot go with"):
        venv.reset(seed=1, options={"reset_mask": np.ones(6, dtype=bool)})


# ---------------------------------------------------------- reproducibility
def _rollout_single(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [(obs, 0.0, False, False)]
    for a in actions:
        obs, r, te, tr, _ = env.step(a)
        out.append((obs, r, te, tr))
        if te or tr:
            break
    return out


def _rollout_vector(env, seed, actions):
    obs, _ = env.reset(seed=seed)
    out = [(obs, None, None, None)]
    for a in actions:
        obs, r, te, tr, _ = env.step(a)
        out.append((obs, r, te, tr))
    return out


def test_single_env_same_seed_same_trajectory(make_cfg):
    actions = np.random.default_rng(0).integers(0, 8, size=30)
    a = _rollout_single(RecEnv(make_cfg("mixed")), 7, actions)
    b = _rollout_single(RecEnv(make_cfg("mixed")), 7, actions)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        _assert_obs_equal(x[0], y[0])
        assert x[1:] == y[1:]
    c = _rollout_single(RecEnv(make_cfg("mixed")), 8, actions)
    assert _obs_differ(a[0][0], c[0][0]) or any(x[1] != y[1] for x, y in zip(a, c))


def test_vector_env_same_seed_same_trajectory(make_cfg):
    actions = np.random.default_rng(0).integers(0, 8, size=(40, 6))
    a = _rollout_vector(RecVectorEnv(6, make_cfg("mixed")), 3, actions)
    b = _rollout_vector(RecVectorEnv(6, make_cfg("mixed")), 3, actions)
    for x, y in zip(a, b):
        _assert_obs_equal(x[0], y[0])
        for u, v in zip(x[1:], y[1:]):
            np.testing.assert_array_equal(u, v)
    c = _rollout_vector(RecVectorEnv(6, make_cfg("mixed")), 4, actions)
    assert _obs_differ(a[0][0], c[0][0])
    assert not np.array_equal(np.stack([x[1] for x in a[1:]]), np.stack([x[1] for x in c[1:]]))


def test_reset_with_seed_restarts_the_same_episode(make_cfg):
    env = RecVectorEnv(4, make_cfg("social"))
    actions = np.random.default_rng(1).integers(0, 8, size=(10, 4))
    a = _rollout_vector(env, 5, actions)
    b = _rollout_vector(env, 5, actions)  # same env object, reseeded
    for x, y in zip(a, b):
        _assert_obs_equal(x[0], y[0])


def test_reset_with_seed_after_a_long_run_is_a_new_env_of_that_seed(make_cfg):
    """Treatment against control on common actions: a lifetime world that has run long enough for its
    popularity to move and its retrieval index to follow (POPULARITY_REFRESH) is, reseeded, the very
    env a new one of that seed is: observations, rewards and ends, step for step."""
    from envs.core import POPULARITY_REFRESH

    cfg = make_cfg("lifetime")
    aged = RecVectorEnv(4, cfg)
    warm = np.random.default_rng(3).integers(0, 8, size=(3 * POPULARITY_REFRESH, 4))
    _rollout_vector(aged, 1, warm)
    assert not np.allclose(aged.world.popularity, aged.world.catalog.popularity)
    actions = np.random.default_rng(4).integers(0, 8, size=(POPULARITY_REFRESH + 5, 4))
    a = _rollout_vector(aged, 9, actions)
    b = _rollout_vector(RecVectorEnv(4, cfg), 9, actions)
    for x, y in zip(a, b):
        _assert_obs_equal(x[0], y[0])
        for u, v in zip(x[1:], y[1:]):
            np.testing.assert_array_equal(u, v)


def test_single_env_equals_vector_env_with_one_slot(make_cfg):
    """A single env seeded s and a one-slot vector env seeded s are the same process.

    Note: user i of an N-slot vector env is NOT the same as a single env with any
    seed: the N users share the batch random streams (one step stream draws N rows)
    and, with social drift, influence each other through the social graph. That is
    the design: a vector env is one population, not N independent copies.
    """
    cfg = make_cfg("mixed")
    actions = np.random.default_rng(2).integers(0, 8, size=30)
    single = _rollout_single(RecEnv(cfg), 11, actions)
    vector = _rollout_vector(RecVectorEnv(1, cfg), 11, actions[:, None])
    for s, v in zip(single, vector):
        _assert_obs_equal(s[0], {k: x[0] for k, x in v[0].items()})
        if v[1] is not None:
            assert s[1] == pytest.approx(float(v[1][0]), abs=0.0)
            assert s[2] == bool(v[2][0]) and s[3] == bool(v[3][0])


def test_vector_env_common_random_numbers_across_policies(make_cfg):
    """Two policies on the same seed draw the same step and candidate noise."""
    cfg = make_cfg("mixed", {"env": {"max_steps": 50}, "users": {"budget_mean": 1e4}, "response": {"leave_max": 0.0}})
    a, b = RecVectorEnv(8, cfg), RecVectorEnv(8, cfg)
    a.reset(seed=9)
    b.reset(seed=9)
    rng = np.random.default_rng(0)
    for _ in range(10):
        a.step(np.zeros(8, dtype=np.int64))
        b.step(rng.integers(0, 8, size=8))
        assert a.world.step_rng.bit_generator.state == b.world.step_rng.bit_generator.state
        assert a.core.candidate_rng.bit_generator.state == b.core.candidate_rng.bit_generator.state
    assert not np.array_equal(a.world.state.interest, b.world.state.interest)


# --------------------------------------------------------------- bad input
def test_unknown_scenario_lists_valid_names():
    with pytest.raises(ValueError) as err:
        make_scenario("nope")
    msg = str(err.value)
    assert "nope" in msg and all(name in msg for name in PRESETS)


@pytest.mark.parametrize(
    "overrides, names",
    [
        ({"bogus": 1}, ["bogus", "allowed", "catalog", "env"]),
        ({"cognitive": {"satiation_rat": 0.1}}, ["cognitive.satiation_rat", "satiation_rate"]),
        ({"env": {"slates": 2}}, ["env.slates", "slate_size"]),
        ({"shock": {"events": [{"kind": "sudden", "step": 3, "when": 2}]}}, ["when", "allowed"]),
    ],
)
def test_unknown_config_key_is_named_with_the_allowed_ones(overrides, names):
    with pytest.raises(ValueError) as err:
        make_scenario("stationary", overrides)
    for name in names:
        assert name in str(err.value)


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"cognitive": {"satiation_rate": 2.0}}, "cognitive.satiation_rate"),
        ({"env": {"num_candidates": 4, "slate_size": 5}}, "env.slate_size"),
        ({"seasonal": {"magnitude": -1.0}}, "seasonal.magnitude"),
        ({"social": {"magnitude": -0.5}}, "social.magnitude"),
        ({"env": {"popular_fraction": 0.8, "topic_fraction": 0.8}}, "env.popular_fraction"),
        ({"cognitive": {"enabled": "yes"}}, "cognitive.enabled"),
        ({"cognitive": 3}, "cognitive"),
        ({"shock": {"events": [{"kind": "sudden", "step": 0}]}}, "step"),
    ],
)
def test_out_of_range_parameter_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make_scenario("stationary", overrides)


def test_bad_shock_kind_lists_the_kinds():
    with pytest.raises(ValueError) as err:
        make_scenario("shock", {"shock": {"events": [{"kind": "meteor", "step": 3}]}})
    msg = str(err.value)
    assert "meteor" in msg and all(k in msg for k in ("sudden", "gradual", "injection"))


def test_slate_size_override_through_gym_make_is_checked(tiny_overrides):
    with pytest.raises(ValueError, match=r"env\.slate_size"):
        gym.make(envs.ENV_ID, scenario="stationary", overrides=tiny_overrides({"env": {"slate_size": 9}}))


@pytest.mark.parametrize("action", [8, -1, np.array([0, 1]), np.array([[3]])])
def test_single_env_rejects_bad_actions(make_cfg, action):
    env = RecEnv(make_cfg("stationary"))
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(action)


def test_single_env_rejects_non_integer_float_action(make_cfg):
    env = RecEnv(make_cfg("stationary"))
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(2.7)


def test_single_env_slate_action_checks(make_cfg):
    env = RecEnv(make_cfg("stationary", {"env": {"slate_size": 3}}))
    env.reset(seed=0)
    with pytest.raises(ValueError):
        env.step(np.array([0, 1]))
    with pytest.raises(ValueError):
        env.step(np.array([0, 1, 8]))
    env.step(np.array([2, 2, 2]))  # duplicates are legal: deduplicated


@pytest.mark.parametrize(
    "actions, what",
    [
        (np.zeros(5, dtype=np.int64), "shape"),
        (np.zeros((4, 2), dtype=np.int64), "shape"),
        (np.array([0, 1, 2, 8]), "out of range"),
        (np.array([0, -1, 2, 3]), "out of range"),
        (np.array([0.5, 1, 2, 3]), "integer"),
    ],
)
def test_vector_env_rejects_bad_actions(make_cfg, actions, what):
    venv = RecVectorEnv(4, make_cfg("stationary"))
    venv.reset(seed=0)
    with pytest.raises(ValueError, match=what):
        venv.step(actions)


def test_vector_env_accepts_integral_floats(make_cfg):
    venv = RecVectorEnv(4, make_cfg("stationary"))
    venv.reset(seed=0)
    venv.step(np.array([0.0, 1.0, 2.0, 3.0]))


def test_vector_env_rejects_wrong_shape_on_autoreset_step(make_cfg):
    venv = RecVectorEnv(4, make_cfg("stationary", {"env": {"max_steps": 1}}))
    venv.reset(seed=0)
    _, _, terminated, truncated, _ = venv.step(np.zeros(4, dtype=np.int64))
    assert (terminated | truncated).all()
    with pytest.raises(ValueError, match="shape"):
        venv.step(np.zeros(5, dtype=np.int64))


# ------------------------------------------------------------ config files
def test_yaml_config_file_overrides(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        "catalog:\n  n_items: 120\ncognitive:\n  magnitude: 2.5\nenv:\n  num_candidates: 6\n  history_len: 4\n"
    )
    cfg = make_scenario("cognitive", config_file=path)
    assert cfg.world.catalog.n_items == 120 and cfg.world.cognitive.magnitude == 2.5
    assert cfg.world.cognitive.enabled  # the preset is still applied underneath
    assert cfg.env.num_candidates == 6
    # Explicit overrides win over the file.
    cfg2 = make_scenario("cognitive", {"cognitive": {"magnitude": 0.5}}, config_file=path)
    assert cfg2.world.cognitive.magnitude == 0.5 and cfg2.world.catalog.n_items == 120
    env = RecEnv("cognitive", config_file=str(path))
    obs, _ = env.reset(seed=0)
    assert obs["candidate_items"].shape == (6,) and env.world.catalog.n_items == 120
    venv = RecVectorEnv(2, "cognitive", config_file=str(path))
    assert venv.reset(seed=0)[0]["history_mask"].shape == (2, 4)


def test_config_file_errors(tmp_path):
    missing = tmp_path / "missing.yaml"
    with pytest.raises(ValueError, match="not found"):
        make_scenario("stationary", config_file=missing)
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        make_scenario("stationary", config_file=bad)
    typo = tmp_path / "typo.yaml"
    typo.write_text("cognitve:\n  enabled: true\n")
    with pytest.raises(ValueError, match="cognitve"):
        make_scenario("stationary", config_file=typo)


def test_presets_enable_their_family():
    assert make_scenario("seasonal").world.seasonal.enabled
    assert make_scenario("social").world.social.enabled
    assert make_scenario("cognitive").world.cognitive.enabled
    assert make_scenario("shock").world.shock.enabled
    s = make_scenario("stationary").world
    assert not (s.seasonal.enabled or s.social.enabled or s.cognitive.enabled or s.shock.enabled)
    m = make_scenario("mixed").world
    assert m.seasonal.enabled and m.social.enabled and m.cognitive.enabled and m.shock.enabled


# -------------------------------------------------------------- dedupe
def test_dedupe_slates_rule():
    slates = np.array([[0, 0, 0], [2, 2, 0], [3, 1, 3], [4, 5, 6], [1, 1, 0]])
    out = dedupe_slates(slates, 8)
    expected = np.array([[0, 1, 2], [2, 0, 1], [3, 1, 0], [4, 5, 6], [1, 0, 2]])
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(slates[0], [0, 0, 0])  # input untouched


def test_dedupe_slates_property():
    rng = np.random.default_rng(0)
    for c, k in [(3, 3), (8, 3), (5, 2), (10, 10)]:
        slates = rng.integers(0, c, size=(200, k))
        out = dedupe_slates(slates, c)
        assert out.min() >= 0 and out.max() < c
        assert all(len(set(row)) == k for row in out.tolist())
        # Positions whose index was not seen before keep it.
        for row_in, row_out in zip(slates.tolist(), out.tolist()):
            seen = set()
            for a, b in zip(row_in, row_out):
                if a not in seen:
                    assert a == b
                seen.add(b)
        np.testing.assert_array_equal(out, dedupe_slates(slates, c))  # deterministic


def test_core_dedupes_slate_actions(make_cfg):
    venv = RecVectorEnv(2, make_cfg("stationary", {"env": {"slate_size": 3}}))
    venv.reset(seed=0)
    np.testing.assert_array_equal(venv.core.check_actions(np.array([[5, 5, 5], [1, 0, 1]])), [[5, 0, 1], [1, 0, 2]])


# ------------------------------------------------------------------ SB3
def test_sb3_vecenv_reset_and_autoreset(tiny_overrides):
    venv = SB3VecEnv(
        num_envs=4,
        scenario="cognitive",
        overrides=tiny_overrides(
            {
                "env": {"max_steps": 4},
                "users": {"budget_mean": 1e4, "past_interactions": 2},
                "response": {"leave_max": 0.0},
            }
        ),
    )
    venv.seed(3)
    obs = venv.reset()
    assert isinstance(obs, dict) and obs.keys() == venv.observation_space.spaces.keys()
    for key, space in venv.observation_space.spaces.items():
        assert obs[key].shape == (4,) + space.shape, key
    for t in range(1, 5):
        obs, reward, done, infos = venv.step(np.arange(4) % 8)
        assert reward.dtype == np.float32 and reward.shape == (4,) and len(infos) == 4
        if t < 4:
            assert not done.any() and all(info == {} for info in infos)
            assert np.all(obs["history_mask"].sum(axis=1) == 2 + t)
    assert done.all()
    for i, info in enumerate(infos):
        term = info["terminal_observation"]
        assert term.keys() == obs.keys()
        assert term["history_mask"].sum() == 6 and term["history_items"].shape == (8,)
        assert info["TimeLimit.truncated"] is True
        assert obs["history_mask"][i].sum() == 2  # the returned obs starts a fresh episode: its user's past only
    assert np.all(venv.world.state.step == 0)


def test_sb3_vecenv_seed_reproducible(make_cfg):
    cfg = make_cfg("mixed")
    runs = []
    for _ in range(2):
        venv = SB3VecEnv(num_envs=3, scenario=cfg)
        venv.seed(42)
        obs = venv.reset()
        rewards = []
        for t in range(12):
            venv.step_async(np.full(3, t % 8))
            _, r, _, _ = venv.step_wait()
            rewards.append(r)
        runs.append((obs, np.stack(rewards)))
    _assert_obs_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


# ------------------------------------------------------ constructor arguments
def test_unknown_argument_is_rejected_and_named(tiny):
    with pytest.raises(TypeError, match="senario"):
        RecEnv(senario="mixed", overrides=tiny)
    with pytest.raises(TypeError, match="senario"):
        RecVectorEnv(num_envs=2, senario="mixed", overrides=tiny)
    with pytest.raises(TypeError, match="senario"):
        gym.make(envs.ENV_ID, senario="mixed", overrides=tiny)
    with pytest.raises(TypeError, match="senario"):
        _make_vec(2, overrides=tiny, senario="mixed")
    with pytest.raises(TypeError, match="senario"):  # vector entry point is the default mode
        gym.make_vec(envs.ENV_ID, num_envs=2, overrides=tiny, senario="mixed")


def test_make_vec_passes_every_documented_argument(tiny, tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text("cognitive:\n  magnitude: 2.5\n")
    venv = _make_vec(3, scenario="cognitive", overrides=tiny, config_file=str(path), seed=5, threads=2)
    assert isinstance(venv, RecVectorEnv) and venv.config.name == "cognitive"
    assert venv.config.world.cognitive.magnitude == 2.5 and venv.config.env.num_candidates == 8
    assert venv.core.seed == 5 and venv.core.threads == 2


# ------------------------------------------------------ info and ground truth
def test_vector_info_slate_is_what_was_served(tiny_overrides):
    venv = RecVectorEnv(
        num_envs=6, scenario="mixed", overrides=tiny_overrides({"env": {"slate_size": 3, "max_steps": 4}})
    )
    obs, _ = venv.reset(seed=0)
    rng = np.random.default_rng(0)
    resets_seen = False
    served = np.ones(6, dtype=bool)  # NEXT_STEP autoreset: a slot that just ended is not served next
    for _ in range(12):
        actions = rng.integers(0, 8, size=(6, 3))
        expected = np.take_along_axis(obs["candidate_items"], dedupe_slates(actions, 8), axis=1)
        obs, reward, terminated, truncated, info = venv.step(actions)
        np.testing.assert_array_equal(info["served"], served)
        assert info["slate"].shape == (6, 3) and info["slate"].dtype.kind == "i"
        np.testing.assert_array_equal(info["slate"][served], expected[served])
        assert np.all(info["slate"][~served] == -1)
        resets_seen |= not served.all()
        clicked = np.flatnonzero(info["clicked"])
        np.testing.assert_array_equal(info["item"][clicked], info["slate"][clicked, info["position"][clicked]])
        served = ~(terminated | truncated)
    assert resets_seen


def test_vector_info_is_per_slot_and_free_of_hidden_state(tiny):
    """Every info value leads with N (RLlib's DictInfoToList splits it); no hidden state in it."""
    from gymnasium.wrappers.vector import DictInfoToList

    venv = RecVectorEnv(num_envs=4, scenario="mixed", overrides=tiny)
    venv.reset(seed=0)
    *_, info = venv.step(np.zeros(4, dtype=np.int64))
    assert set(info) == {"served", "slate", "clicked", "position", "item", "watch_time", "completion"}
    assert all(isinstance(v, np.ndarray) and v.shape[0] == 4 for v in info.values())
    wrapped = DictInfoToList(RecVectorEnv(num_envs=4, scenario="mixed", overrides=tiny))
    wrapped.reset(seed=0)
    *_, infos = wrapped.step(np.zeros(4, dtype=np.int64))
    assert len(infos) == 4 and all(i["slate"].shape == (1,) for i in infos)


def test_vector_ground_truth(tiny_overrides):
    venv = RecVectorEnv(num_envs=5, scenario="mixed", overrides=tiny_overrides({"env": {"slate_size": 2}}))
    obs, _ = venv.reset(seed=1)
    truth = venv.ground_truth()
    for key in ("interest", "effective_interest", "satiation"):
        assert truth[key].shape == (5, 10)
    for key in ("satisfaction", "budget", "step", "calendar"):
        assert truth[key].shape == (5,)
    assert truth["trend"].shape == (10,)
    assert truth["fit"].shape == (5, 2) and np.all(np.isnan(truth["fit"]))  # nothing served yet
    np.testing.assert_array_equal(truth["satisfaction"], venv.world.state.satisfaction)
    truth["satisfaction"][:] = -1.0  # a copy
    assert np.all(venv.world.state.satisfaction >= 0.0)
    # Hidden state is never in the observation.
    assert not set(truth) & set(obs)
    actions = np.array([[0, 1], [2, 2], [7, 3], [4, 5], [6, 0]])
    fit = venv.slate_fit(actions)
    assert fit.shape == (5, 2) and fit.dtype == np.float32
    venv.step(actions)
    np.testing.assert_array_equal(venv.ground_truth()["fit"], fit)  # no shock at step 0


def test_slate_fit_is_taken_before_the_steps_shock(tiny_overrides):
    """slate_fit (before the step) and ground_truth()['fit'] (as served) differ only where a shock hits."""
    venv = RecVectorEnv(
        num_envs=8,
        scenario="shock",
        overrides=tiny_overrides(
            {
                "shock": {"events": [{"kind": "sudden", "step": 2, "fraction": 0.5}]},
                "users": {"budget_mean": 1e4},
                "response": {"leave_max": 0.0},
            }
        ),
    )
    venv.reset(seed=0)
    rng = np.random.default_rng(0)
    for t in range(4):
        actions = rng.integers(0, 8, size=8)
        before = venv.slate_fit(actions)
        venv.step(actions)
        after = venv.ground_truth()["fit"]
        hit = venv.world.state.drift["shock"].draw < 0.5
        if t == 2:
            assert hit.any() and not hit.all()
            assert np.all(after[hit] != before[hit])
            np.testing.assert_array_equal(after[~hit], before[~hit])
        else:
            np.testing.assert_array_equal(after, before)


def test_ground_truth_fit_is_nan_for_reset_slots(make_cfg):
    venv = RecVectorEnv(3, make_cfg("stationary", {"env": {"max_steps": 1}}))
    venv.reset(seed=0)
    venv.step(np.zeros(3, dtype=np.int64))
    assert np.all(np.isfinite(venv.ground_truth()["fit"]))
    assert np.all(np.isnan(venv.slate_fit(np.zeros(3, dtype=np.int64))))  # all slots reset next
    venv.step(np.zeros(3, dtype=np.int64))
    assert np.all(np.isnan(venv.ground_truth()["fit"]))


def test_single_env_info_slate_and_ground_truth(make_cfg):
    cfg = make_cfg("mixed", {"env": {"slate_size": 3}})
    env, venv = RecEnv(cfg), RecVectorEnv(1, cfg)
    obs, _ = env.reset(seed=4)
    venv.reset(seed=4)
    assert np.all(np.isnan(env.ground_truth()["fit"]))
    for action in ([0, 0, 1], [5, 2, 7], [3, 4, 3]):
        fit = env.slate_fit(np.array(action))
        np.testing.assert_array_equal(fit, venv.slate_fit(np.array([action]))[0])
        expected = obs["candidate_items"][dedupe_slates(np.array([action]), 8)[0]]
        obs, _, terminated, truncated, info = env.step(np.array(action))
        *_, vinfo = venv.step(np.array([action]))
        np.testing.assert_array_equal(info["slate"], expected)
        np.testing.assert_array_equal(info["slate"], vinfo["slate"][0])
        truth, vtruth = env.ground_truth(), venv.ground_truth()
        assert truth.keys() == vtruth.keys()
        for key in truth:
            np.testing.assert_array_equal(truth[key], vtruth[key] if key == "trend" else vtruth[key][0])
        assert not (terminated or truncated)


def test_overrides_next_to_a_built_config_are_an_error_not_ignored(make_cfg):
    cfg = make_cfg("stationary")
    for build in (lambda **kw: RecEnv(cfg, **kw), lambda **kw: RecVectorEnv(2, cfg, **kw)):
        with pytest.raises(ValueError, match="apply to a preset name"):
            build(overrides={"env": {"max_steps": 5}})
        with pytest.raises(ValueError, match="apply to a preset name"):
            build(config_file="x.yaml")


# ------------------------------------------------------- observations in row blocks
def _assert_same_bytes(a: dict, b: dict) -> None:
    """Equal dtype, shape and bytes (assert_array_equal would let 0.0 meet -0.0 and NaN meet NaN)."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert a[k].tobytes() == b[k].tobytes(), k


def _unrolled_reference(core) -> dict[str, np.ndarray]:
    """The history part of an observation as it was computed before row blocks: whole-array unrolls
    and days ago of every entry (padding included) times the mask."""
    p = core.history_pos
    unroll = lambda buf: np.concatenate([buf[:, p:], buf[:, :p]], axis=1)  # noqa: E731
    features, mask = unroll(core.history_features), unroll(core.history_mask)
    features[..., 5] = days_ago(core.world.state.day.astype(np.float32)[:, None], unroll(core.history_day)) * mask
    return {"history_items": unroll(core.history_items), "history_features": features, "history_mask": mask}


@pytest.mark.parametrize("cache_rows", [envs.core.CACHE_ROWS, 7])
def test_lifetime_observations_are_the_same_bytes_on_one_two_and_default_threads(cache_rows, monkeypatch):
    """The lifetime preset (history 128, days ago) with enough users to split into blocks: threads=1,
    threads=2 and the default (None, one per core) on one seed and the same actions give the same
    observations, rewards and infos byte for byte, past the ring's wrap; the history equals the
    whole-array computation it replaces, also when each thread's rows are built in cache blocks of 7."""
    monkeypatch.setattr(envs.core, "CACHE_ROWS", cache_rows)
    splits = []

    def spy(work, n_rows, row_size, threads=None):
        splits.append(parallel.n_blocks(n_rows, row_size, threads))
        parallel.for_row_blocks(work, n_rows, row_size, threads)

    monkeypatch.setattr(envs.core, "for_row_blocks", spy)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    overrides = {"catalog": {"n_items": 300}}
    made = [
        RecVectorEnv(num_envs=96, scenario="lifetime", overrides=overrides, seed=4, threads=t) for t in (1, 2, None)
    ]
    one, two, default = made
    rng = np.random.default_rng(1)
    first = [env.reset(seed=4)[0] for env in made]
    assert splits == [1, 2, min(parallel.cores(), 2)]  # 96 rows of 1,432 elements: two blocks at most
    for obs in first[1:]:
        _assert_same_bytes(first[0], obs)
    for step in range(one.config.env.history_len + 5):
        action = rng.integers(0, one.config.env.num_candidates, size=96)
        results = [env.step(action) for env in made]
        for other in results[1:]:
            _assert_same_bytes(results[0][0], other[0])
            _assert_same_bytes(dict(zip("rtu", results[0][1:4])), dict(zip("rtu", other[1:4])))
            _assert_same_bytes(results[0][4], other[4])
        if step % 40 == 0:
            reference = _unrolled_reference(one.core)
            _assert_same_bytes(reference, {k: results[0][0][k] for k in reference})
    assert (one.core.history_features[..., 5] == 0).all()  # observing writes no state


@pytest.mark.parametrize("preset, extra", [("mixed", {}), ("lifetime", {"lifetime": {"horizon_days": 3.0}})])
def test_observations_are_the_same_bytes_on_any_number_of_threads(preset, extra, tiny_overrides, monkeypatch):
    """Blocks of users built on threads (every env split here: one element makes a block) against one
    thread, on one seed and the same actions: the same observations, rewards and infos, bit for bit,
    through resets."""
    monkeypatch.setattr(parallel, "MIN_BLOCK", 1)
    overrides = tiny_overrides({"env": {"history_len": 6, "max_steps": 12}, **extra})
    one, blocks = (RecVectorEnv(num_envs=7, scenario=preset, overrides=overrides, seed=3, threads=t) for t in (1, 3))
    assert parallel.n_blocks(7, 10, threads=3) == 3 and parallel.n_blocks(7, 10, threads=1) == 1
    _assert_same_bytes(one.reset(seed=3)[0], blocks.reset(seed=3)[0])
    rng = np.random.default_rng(0)
    resets = 0
    for _ in range(30):  # past the history's length (the ring wraps) and through resets
        action = rng.integers(0, 8, size=7)
        a, b = one.step(action), blocks.step(action)
        _assert_same_bytes(a[0], b[0])
        _assert_same_bytes(dict(zip("rtu", a[1:4])), dict(zip("rtu", b[1:4])))
        _assert_same_bytes(a[4], b[4])
        resets += int((a[2] | a[3]).sum())
    assert resets > 0


def test_row_blocks_cover_every_row_once_and_raise_a_blocks_error(monkeypatch):
    monkeypatch.setattr(parallel, "MIN_BLOCK", 1)
    seen = np.zeros(10, int)

    def work(rows: slice) -> None:
        seen[rows] += 1

    parallel.for_row_blocks(work, 10, 1, threads=4)
    np.testing.assert_array_equal(seen, 1)

    def fails_late(rows: slice) -> None:
        if rows.stop == 10:
            raise RuntimeError("last block")

    with pytest.raises(RuntimeError, match="last block"):
        parallel.for_row_blocks(fails_late, 10, 1, threads=4)


def test_small_work_stays_on_the_callers_thread():
    assert parallel.n_blocks(16, 100) == 1  # 1,600 elements: a thread would cost more than it saves
    assert parallel.n_blocks(4096, 2000, threads=2) == 2


def test_the_default_takes_the_cores_omp_num_threads_allows(monkeypatch):
    """Ray sets OMP_NUM_THREADS to the CPUs it gives an env runner: runners side by side do not each
    take every core."""
    monkeypatch.setattr(parallel.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert parallel.cores() == 4 and parallel.n_blocks(4096, 2000) == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert parallel.cores() == 1 and parallel.n_blocks(4096, 2000) == 1
    assert parallel.n_blocks(4096, 2000, threads=2) == 2  # an explicit count is taken as given
    monkeypatch.setenv("OMP_NUM_THREADS", "16")
    assert parallel.cores() == 4


@pytest.mark.parametrize("threads", [0, parallel.MAX_THREADS + 1, "2", 1.5])
def test_bad_thread_count_is_named(tiny, threads):
    with pytest.raises(ValueError, match="threads"):
        RecVectorEnv(num_envs=2, overrides=tiny, threads=threads)


@pytest.mark.parametrize("simd", [True, False])
def test_days_ago_of_padding_is_zero_and_real_entries_unchanged(simd, monkeypatch):
    """The masked form against the whole computation times the mask, bit for bit, whether the logarithm
    skips padding (a scalar log1p) or runs over every entry (a SIMD one)."""
    monkeypatch.setattr(envs.core, "SIMD_LOG1P", simd)
    rng = np.random.default_rng(0)
    now = (rng.random((50, 1)) * 60.0).astype(np.float32)
    then = (now - rng.random((50, 16)) * np.array([0.01, 3.0, 400.0])[rng.integers(0, 3, (50, 16))]).astype(np.float32)
    mask = (rng.random((50, 16)) < 0.7).astype(np.float32)
    then[mask == 0] = 0.0  # padding holds day 0
    masked = days_ago(now, then, mask)
    np.testing.assert_array_equal(masked.view(np.int32), (days_ago(now, then) * mask).view(np.int32))
    assert masked[mask == 0].max() == 0.0 and masked[mask == 1].min() > 0.0


def test_a_topic_without_items_falls_back_to_a_uniform_pick():
    """Topic-near candidates of a user anchored on a topic that has no item are uniform picks over the
    catalog; users anchored elsewhere draw from their topic's items."""
    index = CandidateIndex(
        alias_prob=np.ones(6, np.float32),
        alias_item=np.arange(6, dtype=np.int32),
        by_topic=np.array([0, 1, 2, 3, 4, 5], np.int32),  # topic 0: items 0-2, topic 1: none, topic 2: items 3-5
        topic_start=np.array([0, 3, 3], np.int32),
        topic_count=np.array([3, 0, 3], np.int32),
        n_initial=6,
    )
    uniform = np.array([[0.1, 0.5, 0.9], [0.1, 0.5, 0.9], [0.1, 0.5, 0.9]], np.float32)
    items = sample_candidates(index, np.zeros(6), np.array([0, 1, 2]), np.zeros(3), (0, 3, 0), uniform)
    np.testing.assert_array_equal(items, [[0, 1, 2], [0, 3, 5], [3, 4, 5]])
