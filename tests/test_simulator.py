"""Simulator core: response model, catalog, World stepping invariants, common random
numbers, copy / tile / save / load, and parameter validation."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from envs import make_scenario
from simulator import World, response
from simulator.catalog import CatalogParams, make_catalog
from simulator.cognitive import CognitiveParams
from simulator.response import ResponseParams
from simulator.seasonal import SeasonalParams
from simulator.social import SocialParams
from simulator.users import UserParams

SETTINGS = settings(max_examples=15, deadline=None)


def _state_equal(a: World, b: World) -> bool:
    sa, sb = a.state.arrays(), b.state.arrays()
    return all(np.array_equal(sa[k], sb[k]) for k in sa)


def _results_equal(r1, r2) -> bool:
    return all(
        np.array_equal(getattr(r1, f), getattr(r2, f))
        for f in ("position", "item", "watch_time", "completion", "terminated")
    )


# ------------------------------------------------------------------ response
@SETTINGS
@given(
    utility=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=6),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
    outside_value=st.floats(-1e4, 1e4, width=32),
)
def test_choice_probabilities_are_a_distribution_for_extreme_utilities(utility, outside_value):
    outside = np.full(utility.shape[0], outside_value, dtype=np.float32)
    probs = response.choice_probabilities(utility.copy(), outside)
    assert probs.shape == (utility.shape[0], utility.shape[1] + 1)
    assert np.all(np.isfinite(probs))
    assert np.all(probs >= 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The best option gets the largest probability.
    full = np.concatenate([outside[:, None], utility], axis=1)
    best = full.max(axis=1)
    assert np.all(probs[np.arange(len(full)), full.argmax(axis=1)] >= probs.max(axis=1) - 1e-6)
    assert np.all(np.isfinite(best))


def test_choice_probabilities_are_multinomial_logit():
    u = np.array([[0.0, 1.0, 2.0]], dtype=np.float32)
    p = response.choice_probabilities(u.copy(), np.array([0.5], dtype=np.float32))
    e = np.exp([0.5, 0.0, 1.0, 2.0])
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-5)


@SETTINGS
@given(probs_raw=hnp.arrays(np.float64, st.integers(2, 5), elements=st.floats(0.0, 1.0)))
def test_sample_choice_inverse_cdf_matches_probabilities(probs_raw):
    if probs_raw.sum() <= 1e-6:
        probs_raw = probs_raw + 1.0
    probs = (probs_raw / probs_raw.sum())[None, :]
    m = 2000
    uniform = (np.arange(m) + 0.5) / m
    choice = response.sample_choice(np.repeat(probs, m, axis=0), uniform)
    assert choice.min() >= -1 and choice.max() <= probs.shape[1] - 2
    freq = np.bincount(choice + 1, minlength=probs.shape[1]) / m
    np.testing.assert_allclose(freq, probs[0], atol=2.0 / m + 1e-9)
    # A zero-probability option is never chosen.
    assert np.all(freq[probs[0] == 0.0] == 0.0)


def test_slates_of_one_take_the_same_choices_as_the_general_formula_bit_for_bit():
    """Treatment (the two-column path of every preset's slates of one) against control (the
    reductions of any slate size, written out), on the same utilities and uniforms."""
    rng = np.random.default_rng(0)
    n = 4096
    utility = (rng.standard_normal((n, 1)) * np.array([[30.0]])).astype(np.float32)
    utility[:8, 0] = [-1e4, 1e4, 0.0, -0.0, 88.0, -88.0, 1e-30, 3.4e38]
    outside = rng.standard_normal(n).astype(np.float32)
    uniform = rng.random(n, dtype=np.float32)
    u = np.concatenate([outside[:, None], utility], axis=1)
    u -= u.max(axis=1, keepdims=True)
    control = np.exp(u) / np.exp(u).sum(axis=1, keepdims=True)
    probs = response.choice_probabilities(utility.copy(), outside)
    assert probs.tobytes() == control.tobytes()
    control_choice = (uniform[:, None] >= np.cumsum(control, axis=1)[:, :-1]).sum(axis=1) - 1
    choice = response.sample_choice(probs, uniform)
    assert choice.dtype == control_choice.dtype and np.array_equal(choice, control_choice)
    assert set(np.unique(choice)) == {-1, 0}


def test_completion_increases_with_fit_and_quality():
    p = ResponseParams()
    fit = np.linspace(-1, 1, 5)
    c = response.completion(fit, np.full(5, 0.5), p)
    assert np.all(np.diff(c) > 0) and np.all((c > 0) & (c < 1))
    q = response.completion(np.zeros(5), np.linspace(0, 1, 5), p)
    assert np.all(np.diff(q) > 0)


def test_clickbait_feels_worse_than_honest_content():
    p = ResponseParams()
    clicked = np.array([True, True, False])
    felt = response.experience(clicked, np.array([0.6, 0.6, 0.6]), np.array([0.6, 1.0, 1.0]), p)
    assert felt[0] == pytest.approx(0.6)
    assert felt[1] < felt[0]
    assert felt[2] == pytest.approx(p.skip_experience)


def test_position_bias_decreases_down_the_slate():
    b = response.position_log_bias(4, ResponseParams(position_decay=0.7))
    assert b[0] == 0.0 and np.all(np.diff(b) < 0)


def test_leave_probability_only_below_threshold():
    p = ResponseParams(leave_threshold=0.4, leave_max=0.3)
    lp = response.leave_probability(np.array([0.0, 0.2, 0.4, 0.9], dtype=np.float32), p)
    np.testing.assert_allclose(lp, [0.3, 0.15, 0.0, 0.0], atol=1e-6)


# ------------------------------------------------------------------- catalog
def test_catalog_arrays_are_well_formed():
    params = CatalogParams(n_items=80, n_topics=6, n_arrivals=20, arrival_window=15)
    cat = make_catalog(params, np.random.default_rng(0))
    assert cat.n_items == 100 and cat.n_topics == 6 and cat.n_initial == 80
    np.testing.assert_allclose(cat.topics.sum(axis=1), 1.0, atol=1e-5)
    for name in ("quality", "attractiveness", "quality_signal"):
        arr = getattr(cat, name)
        assert arr.min() >= 0.0 and arr.max() <= 1.0, name
    assert cat.length.max() <= params.length_max and cat.length.min() > 0
    assert cat.popularity.sum() == pytest.approx(1.0)
    assert np.all(cat.arrival[:80] == 0)
    late = cat.arrival[80:]
    assert np.all((late >= 1) & (late <= 15)) and np.all(np.diff(late) >= 0)
    assert cat.features.shape == (100, 6 + 4)
    assert cat.features.min() >= 0.0 and cat.features.max() <= 1.0


def test_catalog_depends_only_on_catalog_seed(make_cfg):
    cfg = make_cfg("stationary").world
    a, b = World(cfg, 4, seed=1), World(cfg, 4, seed=2)
    np.testing.assert_array_equal(a.catalog.features, b.catalog.features)
    np.testing.assert_array_equal(a.centres, b.centres)
    other = make_cfg("stationary", {"catalog": {"seed": 7}}).world
    assert not np.array_equal(World(other, 4, 1).catalog.features, a.catalog.features)


# -------------------------------------------------------------------- world
def test_world_step_result_is_consistent(make_world, random_slates):
    w = make_world("mixed", n_users=16, seed=3)
    rng = np.random.default_rng(0)
    for _ in range(10):
        slates = random_slates(w, rng, 3)
        r = w.step(slates)
        clicked = r.position >= 0
        assert np.array_equal(r.clicked, clicked)
        assert np.all(r.item[~clicked] == -1)
        rows = np.flatnonzero(clicked)
        assert np.array_equal(r.item[rows], slates[rows, r.position[rows]])
        assert np.all(r.watch_time[~clicked] == 0.0) and np.all(r.watch_time >= 0.0)
        assert np.all((r.completion >= 0.0) & (r.completion <= 1.0))
        assert r.terminated.dtype == bool and r.terminated.shape == (16,)
    assert np.all(w.state.step == 10)


def test_step_result_fit_is_the_served_items_fit(make_cfg, random_slates):
    """StepResult.fit [N, K] is `slate_fit` of the served slate, after that step's shocks."""
    cfg = make_cfg("mixed", {"shock": {"events": [{"kind": "sudden", "step": 3, "fraction": 0.5}]}}).world
    w = World(cfg, 16, seed=2)
    rng = np.random.default_rng(0)
    for t in range(6):
        slates = random_slates(w, rng, 3)
        before = w.slate_fit(slates)
        np.testing.assert_array_equal(before, w.slate_utility(slates, positions=False)[1])
        hit = (w.state.step == 3) & (w.state.drift["shock"].draw < 0.5)
        r = w.step(slates)
        assert r.fit.shape == (16, 3) and r.fit.dtype == np.float32
        # Equal before and after the step unless a shock hit the user at this step.
        np.testing.assert_array_equal(r.fit[~hit], before[~hit])
        assert hit.any() == (t == 3)
        if hit.any():
            assert np.all(np.any(r.fit[hit] != before[hit], axis=1))


def test_expected_budget_cost_is_the_simulators_budget_cost(make_world):
    """World.watch_per_budget = expected watch / response.budget_cost(expected watch, personal value)."""
    w = make_world("cognitive", {"response": {"browse_cost": 1.5, "quality_refund": 0.3}}, n_users=5, seed=1)
    items = np.random.default_rng(0).integers(0, w.catalog.n_initial, size=(5, 7))
    watch = w.expected_engagement(items)
    value = response.personal_value(w.slate_fit(items), w.catalog.quality[items], w.config.response)
    cost = response.budget_cost(watch, value, w.config.response)
    np.testing.assert_array_equal(w.expected_budget_cost(items), cost)
    np.testing.assert_array_equal(w.expected_budget_cost(items, watch), cost)
    ratio = w.watch_per_budget(items)
    assert ratio.shape == (5, 7) and ratio.dtype == np.float32
    np.testing.assert_array_equal(ratio, watch / cost)


@pytest.mark.parametrize(
    "overrides", [{}, {"browse_cost": 2.0, "quality_refund": 0.0}, {"browse_cost": 0.1, "quality_refund": 1.0}]
)
def test_expected_budget_cost_matches_simulated_budget_spent(make_cfg, overrides):
    """The expected cost of showing one item equals the mean budget a simulated step spends."""
    w = World(make_cfg("stationary", {"response": overrides}).world, 4000, seed=0)
    item = np.full((4000, 1), 7, dtype=np.int64)
    expected = w.expected_budget_cost(item)[:, 0].mean()
    budget = w.state.budget.copy()
    w.step(item)
    assert (budget - w.state.budget).mean() == pytest.approx(expected, rel=0.05)


def test_world_rejects_bad_slates_and_user_counts(make_world, make_cfg):
    w = make_world(n_users=4)
    with pytest.raises(ValueError, match="slates"):
        w.step(np.zeros((3, 1), dtype=np.int64))
    with pytest.raises(ValueError, match="slates"):
        w.step(np.zeros(4, dtype=np.int64))
    with pytest.raises(ValueError, match="n_users"):
        World(make_cfg().world, 0, 0)


def test_reset_users_only_touches_masked_users(make_world, random_slates):
    w = make_world("cognitive", n_users=6, seed=1)
    rng = np.random.default_rng(1)
    for _ in range(5):
        w.step(random_slates(w, rng))
    before = w.state.copy()
    mask = np.array([True, False, True, False, False, False])
    w.reset_users(mask)
    assert np.all(w.state.step[mask] == 0) and np.all(w.state.step[~mask] == 5)
    assert np.all(w.state.drift["cognitive"].satiation[mask] == 0.0)
    assert np.all(w.state.recent_items[mask] == -1)
    np.testing.assert_array_equal(w.state.interest[~mask], before.interest[~mask])
    np.testing.assert_array_equal(w.state.interest[mask], w.state.initial_interest[mask])
    assert not np.array_equal(w.state.interest[mask], before.interest[mask])


def test_ground_truth_is_a_copy(make_world):
    w = make_world("seasonal", n_users=3)
    gt = w.ground_truth()
    gt["interest"][:] = 99.0
    gt["satiation"][:] = 99.0
    assert np.all(w.state.interest <= 1.0) and np.all(w.state.drift["cognitive"].satiation == 0.0)
    assert set(gt) >= {"interest", "effective_interest", "satiation", "satisfaction", "budget", "calendar"}


EXTREMES = dict(
    fit_weight=st.sampled_from([0.0, 100.0]),
    attractiveness_weight=st.sampled_from([0.0, 100.0]),
    no_click_utility=st.sampled_from([-100.0, 0.0, 8.0]),
    satiation_rate=st.sampled_from([0.0, 1.0]),
    satiation_recovery=st.sampled_from([0.0, 1.0]),
    satiation_weight=st.sampled_from([0.0, 100.0]),
    random_walk_std=st.sampled_from([0.0, 1.0]),
    reinforcement_rate=st.sampled_from([0.0, 1.0]),
    novelty_weight=st.sampled_from([0.0, 100.0]),
    magnitude=st.sampled_from([0.0, 10.0]),
    watch_noise=st.sampled_from([0.0, 2.0]),
    satisfaction_rate=st.sampled_from([0.0, 1.0]),
    neighbour_rate=st.sampled_from([0.0, 1.0]),
)


@SETTINGS
@given(p=st.fixed_dictionaries(EXTREMES), seed=st.integers(0, 2**16))
def test_world_with_extreme_parameters_stays_finite_and_in_range(make_cfg, random_slates, p, seed):
    m = p["magnitude"]
    cfg = make_cfg(
        "mixed",
        {
            "catalog": {"n_items": 60, "n_arrivals": 10, "arrival_window": 5},
            "response": {
                "fit_weight": p["fit_weight"],
                "attractiveness_weight": p["attractiveness_weight"],
                "no_click_utility": p["no_click_utility"],
                "watch_noise": p["watch_noise"],
                "satisfaction_rate": p["satisfaction_rate"],
                "quality_refund": 0.0,
            },
            "cognitive": {
                "magnitude": m,
                "satiation_rate": p["satiation_rate"],
                "satiation_recovery": p["satiation_recovery"],
                "satiation_weight": p["satiation_weight"],
                "random_walk_std": p["random_walk_std"],
                "reinforcement_rate": p["reinforcement_rate"],
                "novelty_weight": p["novelty_weight"],
            },
            "seasonal": {"magnitude": m, "amplitude": 10.0, "period": 4},
            "social": {"magnitude": m, "neighbour_rate": p["neighbour_rate"], "trend_rate": 1.0},
            "shock": {
                "magnitude": m,
                "events": [
                    {"kind": "sudden", "step": 2, "strength": 1.0},
                    {"kind": "gradual", "step": 3, "duration": 3},
                    {"kind": "injection", "step": 4, "n_items": 5},
                ],
            },
        },
    )
    w = World(cfg.world, 10, seed)
    rng = np.random.default_rng(seed)
    browse = cfg.world.response.browse_cost
    with np.errstate(over="ignore", under="ignore"):
        for _ in range(8):
            budget = w.state.budget.copy()
            k = int(rng.integers(1, 4))
            slates = rng.integers(0, w.catalog.n_items, size=(10, k))
            ee = w.expected_engagement(slates)
            assert np.all(np.isfinite(ee)) and np.all(ee >= 0)
            r = w.step(slates)
            s = w.state
            for name in ("watch_time", "completion"):
                assert np.all(np.isfinite(getattr(r, name))), name
            for name, arr in s.arrays().items():
                if arr.dtype.kind == "f":
                    assert np.all(np.isfinite(arr)), name
            assert np.all(np.isfinite(w.effective_interest()))
            satiation = s.drift["cognitive"].satiation
            assert satiation.min() >= 0.0 and satiation.max() <= 1.0
            assert s.satisfaction.min() >= 0.0 and s.satisfaction.max() <= 1.0
            assert s.interest.min() >= -1.0 and s.interest.max() <= 1.0
            # quality_refund = 0: every step costs at least the browse cost.
            assert np.all(budget - s.budget >= browse - 1e-4)


# ------------------------------------------------------- common random numbers
def test_step_noise_is_common_whatever_the_slates(make_world, random_slates):
    """Two policies on one seed: the step stream is in the same state after each step."""
    a = make_world("mixed", n_users=12, seed=5)
    b = make_world("mixed", n_users=12, seed=5)
    rng_a, rng_b = np.random.default_rng(1), np.random.default_rng(2)
    for _ in range(6):
        a.step(random_slates(a, rng_a, 1))
        b.step(random_slates(b, rng_b, 3))  # different slates and slate sizes
        assert a.step_rng.bit_generator.state == b.step_rng.bit_generator.state
    assert not np.array_equal(a.state.interest, b.state.interest)


def test_step_noise_differs_across_seeds(make_world):
    a = make_world(n_users=4, seed=1)
    b = make_world(n_users=4, seed=2)
    assert a.step_rng.bit_generator.state != b.step_rng.bit_generator.state


# ------------------------------------------------------- copy, tile, save/load
def test_copy_steps_independently_and_identically(make_world, random_slates):
    w = make_world("mixed", n_users=10, seed=4)
    rng = np.random.default_rng(0)
    for _ in range(3):
        w.step(random_slates(w, rng))
    c = w.copy()
    snapshot = w.state.copy()
    slates = [random_slates(w, rng, 2) for _ in range(5)]
    results_c = [c.step(s) for s in slates]
    # Stepping the copy leaves the original untouched.
    for k, v in snapshot.arrays().items():
        np.testing.assert_array_equal(w.state.arrays()[k], v, err_msg=k)
    results_w = [w.step(s) for s in slates]
    assert all(_results_equal(x, y) for x, y in zip(results_w, results_c))
    assert _state_equal(w, c)


def test_copy_with_seed_reseeds_step_noise(make_world):
    w = make_world("stationary", {"response": {"watch_noise": 0.5}}, n_users=32, seed=0)
    slates = np.zeros((32, 1), dtype=np.int64)
    a, b = w.copy(seed=1), w.copy(seed=2)
    ra, rb = a.step(slates), b.step(slates)
    assert not np.array_equal(ra.watch_time, rb.watch_time)


def test_save_load_round_trip(make_world, random_slates, tmp_path):
    w = make_world("mixed", n_users=10, seed=6)
    rng = np.random.default_rng(0)
    for _ in range(4):
        w.step(random_slates(w, rng))
    path = tmp_path / "world.npz"
    w.save(path)
    slates = random_slates(w, rng, 2)
    r1 = w.step(slates)
    # Load into a world built with the same config but a different seed: the state wins.
    other = World(w.config, 10, seed=999)
    other.load(path)
    assert np.array_equal(other.state.drift["social"].neighbours, w.state.drift["social"].neighbours)
    r2 = other.step(slates)
    assert _results_equal(r1, r2)
    assert _state_equal(w, other)


def test_load_rejects_other_topic_count(make_world, make_cfg, tmp_path):
    w = make_world(n_users=3)
    w.save(tmp_path / "w.npz")
    other = World(make_cfg("stationary", {"catalog": {"n_topics": 4}}).world, 3, 0)
    with pytest.raises(ValueError, match="topics"):
        other.load(tmp_path / "w.npz")


def test_save_load_round_trip_without_npz_suffix(make_world, tmp_path):
    w = make_world(n_users=3)
    w.save(tmp_path / "state")
    World(w.config, 3, 0).load(tmp_path / "state")


def test_tile_layout_and_independence(make_world, random_slates):
    w = make_world("social", n_users=5, seed=2)
    rng = np.random.default_rng(0)
    for _ in range(2):
        w.step(random_slates(w, rng))
    snapshot = w.state.copy()
    t = w.tile(3, seed=11)
    assert t.n_users == 15
    for i in range(5):
        for j in range(3):
            np.testing.assert_array_equal(t.state.interest[i * 3 + j], w.state.interest[i])
            # copy j of user i follows copy j of its neighbours
            graph, tiled = w.state.drift["social"].neighbours, t.state.drift["social"].neighbours
            np.testing.assert_array_equal(tiled[i * 3 + j], graph[i] * 3 + j)
    t.step(np.zeros((15, 1), dtype=np.int64))
    for k, v in snapshot.arrays().items():
        np.testing.assert_array_equal(w.state.arrays()[k], v, err_msg=k)


def test_tile_noise_groups_share_noise(make_world):
    w = make_world("mixed", {"response": {"watch_noise": 0.5}}, n_users=6, seed=3)
    t = w.tile(4, seed=7, noise_groups=2)
    assert t.noise_rows == 6 * 2
    slates = np.repeat(np.arange(6)[:, None], 4, axis=0).astype(np.int64)  # same slate for all copies
    saw_difference = False
    for _ in range(8):
        r = t.step(slates)
        for name in ("position", "watch_time"):
            arr = getattr(r, name).reshape(6, 4)
            np.testing.assert_array_equal(arr[:, 0], arr[:, 2])  # same noise group
            np.testing.assert_array_equal(arr[:, 1], arr[:, 3])
            saw_difference |= not np.array_equal(arr[:, 0], arr[:, 1])
    interest = t.state.interest.reshape(6, 4, -1)
    np.testing.assert_array_equal(interest[:, 0], interest[:, 2])
    assert saw_difference


def test_tile_one_noise_group_keeps_copies_identical_with_social_on(make_world):
    w = make_world("mixed", n_users=5, seed=1)
    t = w.tile(3, seed=2, noise_groups=1)
    slates = np.repeat(np.arange(5)[:, None] + 10, 3, axis=0).astype(np.int64)
    for _ in range(6):
        t.step(slates)
    interest = t.state.interest.reshape(5, 3, -1)
    np.testing.assert_array_equal(interest[:, 0], interest[:, 1])
    np.testing.assert_array_equal(interest[:, 0], interest[:, 2])


def test_tile_rejects_bad_noise_groups(make_world):
    w = make_world(n_users=2)
    with pytest.raises(ValueError, match="noise_groups"):
        w.tile(4, seed=0, noise_groups=3)
    with pytest.raises(ValueError, match="m"):
        w.tile(0, seed=0)


# ------------------------------------------------------------ length taste
def _nearest_and_farthest_length(world: World) -> tuple[np.ndarray, np.ndarray]:
    """[N, 1] each user's initial item nearest to and farthest from their preferred length."""
    gap = np.abs(world.catalog.log_length[None, : world.catalog.n_initial] - world.state.preferred_length[:, None])
    return gap.argmin(axis=1)[:, None], gap.argmax(axis=1)[:, None]


def test_length_taste_users_watch_more_of_their_preferred_length(make_world):
    """Treatment against control on common random numbers: the same users (same step noise) served
    the item nearest their preferred length watch a larger share of it than of the farthest one,
    and more clicks, with `length_taste` on; with it off, the preferred lengths are not drawn and
    the world is the default one, draw for draw."""
    on = make_world("stationary", {"users": {"length_taste": 1.0}}, n_users=256, seed=3)
    prefs = on.state.preferred_length
    assert prefs.std() > 0.3  # spread like the catalog's log lengths (length_sigma 0.5)
    near, far = _nearest_and_farthest_length(on)
    fit_gap = on.slate_fit(near) - on.slate_fit(far)
    assert np.all(fit_gap > 0)
    a, b = on.copy(), on.copy()
    ra, rb = a.step(near), b.step(far)
    assert ra.clicked.mean() > rb.clicked.mean() + 0.05
    both = ra.clicked & rb.clicked
    assert ra.completion[both].mean() > rb.completion[both].mean() + 0.05
    off = make_world("stationary", None, n_users=256, seed=3)
    default = make_world("stationary", {"users": {"length_taste": 0.0}}, n_users=256, seed=3)
    assert np.all(off.state.preferred_length == 0) and _state_equal(off, default)
    assert np.array_equal(off.catalog.quality_signal, default.catalog.quality_signal)


def test_a_second_community_pulls_tastes_toward_it_and_changes_nothing_else(make_world):
    """Treatment against control on common random numbers: with `second_community` on, each user's
    tastes move from their community's centre toward one other community's by a share in (0, max]
    of the community pull (interest_on - interest_off = strength x share x (centre_2 - centre_1)),
    and every other trait is the default world's, draw for draw; off, the world is the default."""
    share_max = 0.5
    on = make_world("stationary", {"users": {"second_community": share_max}}, n_users=256, seed=3)
    off = make_world("stationary", None, n_users=256, seed=3)
    w = on.config.users.community_strength
    moved = (on.state.interest - off.state.interest).astype(np.float64)  # [N, T]
    towards = on.centres[None, :, :] - on.centres[off.state.community][:, None, :]  # [N, C, T]
    # the share each other community would need, fitted per user: exactly one fits with no residual
    coef = (towards * moved[:, None, :]).sum(-1) / np.maximum((towards**2).sum(-1), 1e-12) / w  # [N, C]
    residual = np.abs(moved[:, None, :] - w * coef[..., None] * towards).max(-1)  # [N, C]
    own = np.arange(on.config.users.n_communities)[None, :] == off.state.community[:, None]
    best = np.where(own, np.inf, residual).argmin(1)
    rows = np.arange(256)
    assert np.all(residual[rows, best] < 1e-5) and np.all(best != off.state.community)
    shares = coef[rows, best]
    assert shares.min() > 0 and shares.max() <= share_max + 1e-5 and shares.std() > 0.1  # ~ U(0, max)
    traits = ("budget", "community", "cognitive.novelty_seeking", "social.susceptibility", "shock.draw", "shock.target")
    for name in traits:
        assert np.array_equal(on.state.arrays()[name], off.state.arrays()[name]), name
    default = make_world("stationary", {"users": {"second_community": 0.0}}, n_users=256, seed=3)
    assert _state_equal(off, default)


@pytest.mark.parametrize(
    "users, message",
    [
        ({"second_community": 0.6}, "users.second_community must be in [0, 0.5]"),
        ({"second_community": 0.3, "n_communities": 1}, "second_community needs n_communities >= 2"),
        ({"second_community": 0.3, "real_history": True}, "second_community is for simulated users"),
    ],
)
def test_a_second_community_refuses_what_it_cannot_be(users, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        UserParams(**users)


def test_preferred_length_survives_a_shock_that_moves_tastes(make_world, random_slates):
    """A sudden shock moves interests toward another community; the preferred length stays: it is
    what older history still tells after a shift of topical tastes."""
    extra = {
        "users": {"length_taste": 1.0},
        "shock": {"enabled": True, "events": [{"kind": "sudden", "step": 1, "fraction": 1.0, "strength": 0.8}]},
    }
    w = make_world("shock", extra, n_users=64, seed=1)
    interest, prefs = w.state.interest.copy(), w.state.preferred_length.copy()
    rng = np.random.default_rng(0)
    for _ in range(3):
        w.step(random_slates(w, rng))
    assert np.abs(w.state.interest - interest).mean() > 0.2
    assert np.array_equal(w.state.preferred_length, prefs)


def test_the_rating_and_the_feature_model_know_the_typical_length_taste(make_world):
    """With length taste on, the observed rating of items far from the typical length is lower (the
    audience's mean value falls); the user-blind feature model ranks by the same typical taste."""
    from agents.item_score import LENGTH, FeatureModelPolicy

    on = make_world("stationary", {"users": {"length_taste": 2.0}}, n_users=8, seed=0)
    off = make_world("stationary", None, n_users=8, seed=0)
    centre = np.log(on.config.catalog.length_mean)
    far = np.abs(on.catalog.log_length - centre)
    drop = off.catalog.quality_signal - on.catalog.quality_signal
    assert np.corrcoef(far, drop)[0, 1] > 0.3
    policy = FeatureModelPolicy()
    policy.config = make_scenario("stationary", {"users": {"length_taste": 2.0}})
    t = on.catalog.n_topics
    features = on.catalog.features[:1].repeat(2, axis=0)[None].copy()  # [1, 2, F]: one item twice, then
    features[0, 0, t + LENGTH] = np.exp(centre) / on.config.catalog.length_max  # at the typical length
    features[0, 1, t + LENGTH] = 4 * np.exp(centre) / on.config.catalog.length_max  # and at 4x it
    scores = policy.scores({"candidate_features": features})
    assert scores[0, 0] > scores[0, 1]


# ------------------------------------------------------------ validation
@pytest.mark.parametrize(
    "cls, kwargs, field",
    [
        (CognitiveParams, {"satiation_rate": 2.0}, "cognitive.satiation_rate"),
        (CognitiveParams, {"magnitude": -1.0}, "cognitive.magnitude"),
        (CognitiveParams, {"enabled": "yes"}, "cognitive.enabled"),
        (SeasonalParams, {"period": 1}, "seasonal.period"),
        (SocialParams, {"degree": 0}, "social.degree"),
        (ResponseParams, {"quality_refund": 1.5}, "response.quality_refund"),
        (ResponseParams, {"fit_weight": float("nan")}, "response.fit_weight"),
        (UserParams, {"n_communities": 1.5}, "users.n_communities"),
        (UserParams, {"length_taste": -0.5}, "users.length_taste"),
        (CatalogParams, {"n_items": 1}, "catalog.n_items"),
    ],
)
def test_parameter_validation_names_the_field(cls, kwargs, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        cls(**kwargs)


def test_injection_topic_must_exist():
    with pytest.raises(ValueError, match="topic"):
        make_scenario(
            "stationary",
            {
                "catalog": {"n_topics": 3},
                "shock": {"enabled": True, "events": [{"kind": "injection", "step": 2, "topic": 5}]},
            },
        )
