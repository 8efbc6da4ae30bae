"""Each drift family does what it says, checked against the same world with the family off."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs import RecVectorEnv
from simulator import World, cognitive, seasonal, social
from simulator.seasonal import SeasonalParams
from simulator.social import SocialParams

# Users that neither leave nor run out of budget within a test's horizon.
LONG_SESSIONS = {"users": {"budget_mean": 1e4, "budget_std": 0.0}, "response": {"leave_max": 0.0}}
ALWAYS_CLICK = {"response": {"no_click_utility": -100.0, "satisfaction_rate": 0.0}}


def _merge(*parts):
    out: dict = {}
    for p in parts:
        for k, v in p.items():
            out[k] = {**out.get(k, {}), **v} if isinstance(v, dict) else v
    return out


def _pure_topic_items(world: World, min_weight: float = 0.8):
    """(topic, items) for the topic with the most nearly-pure initial items, and a second such topic."""
    topics = world.catalog.topics[: world.catalog.n_initial]
    pure = topics.max(axis=1) > min_weight
    dom = topics.argmax(axis=1)
    counts = np.bincount(dom[pure], minlength=world.catalog.n_topics)
    k, j = np.argsort(-counts)[:2]
    assert counts[k] >= 3 and counts[j] >= 3, "tiny catalog lacks pure-topic items"
    items_k = np.flatnonzero(pure & (dom == k))
    items_j = np.flatnonzero(pure & (dom == j))
    return int(k), items_k, int(j), items_j


def _show(world: World, items: np.ndarray, steps: int, start: int = 0) -> None:
    """Show every user a one-item slate cycling through `items`."""
    for t in range(steps):
        item = items[(start + t) % len(items)]
        world.step(np.full((world.n_users, 1), item, dtype=np.int64))


# ------------------------------------------------------------------ seasonal
@settings(max_examples=25, deadline=None)
@given(period=st.integers(2, 40).map(lambda p: 2 * p), t=st.integers(0, 200), amplitude=st.floats(0.1, 1.0))
def test_seasonal_appeal_repeats_with_its_period(period, t, amplitude):
    params = SeasonalParams(enabled=True, period=period, amplitude=amplitude)
    phases = seasonal.topic_phases(4)
    at = lambda c: seasonal.seasonal_appeal(np.array([c]), phases, params)  # noqa: E731
    np.testing.assert_allclose(at(t), at(t + period), atol=1e-3)
    half = at(t + period // 2)
    np.testing.assert_allclose(half, -at(t), atol=1e-3)  # half a cycle later: the opposite season
    assert np.abs(half - at(t)).max() > 0.5 * amplitude
    off = SeasonalParams(enabled=False, period=period, amplitude=amplitude)
    assert np.all(seasonal.seasonal_appeal(np.array([t]), phases, off) == 0.0)


@pytest.mark.parametrize("on", [True, False])
def test_world_effective_interest_is_seasonal_only_when_on(make_world, on):
    w = make_world("seasonal", {"seasonal": {"enabled": on, "period": 10}}, n_users=6, seed=2)
    eff0 = np.array(w.effective_interest())
    if not on:
        np.testing.assert_array_equal(eff0, w.state.interest)
        return
    assert np.abs(eff0 - w.state.interest).max() > 0.1
    slates = np.zeros((6, 1), dtype=np.int64)
    for _ in range(5):
        w.step(slates)
    eff5 = np.array(w.effective_interest())
    for _ in range(5):
        w.step(slates)
    eff10 = np.array(w.effective_interest())
    # Seasonal-only world: long-term interests never move, the felt ones cycle.
    np.testing.assert_array_equal(w.state.interest, w.state.initial_interest)
    np.testing.assert_allclose(eff10, eff0, atol=1e-4)
    assert np.abs(eff5 - eff0).max() > 0.1


def test_season_reach_decides_who_feels_the_season():
    appeal = np.full((1, 4), 0.6, np.float32)
    interest = np.array([[-1.0, -0.5, 0.0, 0.6]], np.float32)  # hates, dislikes, indifferent, likes
    felt = lambda reach: seasonal.personal_season(appeal, interest, reach)[0]  # noqa: E731
    # reach 1 (default): in proportion to (1 + interest) / 2; the indifferent feel half.
    np.testing.assert_allclose(felt(1.0), 0.6 * np.array([0.0, 0.25, 0.5, 0.8]), atol=1e-6)
    # reach 0: only those who like the topic, in proportion to how much.
    np.testing.assert_allclose(felt(0.0), 0.6 * np.array([0.0, 0.0, 0.0, 0.6]), atol=1e-6)
    np.testing.assert_allclose(felt(0.5), 0.6 * np.array([0.0, 0.0, 1 / 3, 1.1 / 1.5]), atol=1e-6)
    with pytest.raises(ValueError, match="seasonal.reach"):
        SeasonalParams(reach=1.5)


def test_a_shorter_season_reach_is_worth_less_to_a_user_blind_policy(make_world):
    # Same users, same season (common random numbers): with reach 0 the season lifts only topics
    # a user likes, so the mean lift over users and topics falls, and no disliked topic gains.
    worlds = {
        r: make_world("seasonal", {"seasonal": {"period": 10, "reach": r}}, n_users=64, seed=4) for r in (1.0, 0.0)
    }
    np.testing.assert_array_equal(worlds[1.0].state.interest, worlds[0.0].state.interest)
    lift = {r: np.array(w.effective_interest()) - w.state.interest for r, w in worlds.items()}
    season = seasonal.FAMILY.appeal(worlds[1.0], worlds[1.0].state)
    in_season = season > 0
    assert lift[0.0][in_season].mean() < 0.6 * lift[1.0][in_season].mean()
    disliked = worlds[0.0].state.interest <= 0
    assert np.all(lift[0.0][disliked] == 0.0) and np.abs(lift[1.0][disliked & in_season]).max() > 0.05


def test_context_season_features_cycle_with_the_period(make_cfg):
    period = 10
    cfg = make_cfg("seasonal", _merge(LONG_SESSIONS, {"seasonal": {"period": period}, "env": {"max_steps": 40}}))
    env = RecVectorEnv(num_envs=4, scenario=cfg, seed=0)
    obs, _ = env.reset(seed=3)
    ctx, hist = [obs["context"][:, :2]], []
    for _ in range(2 * period):
        obs, _, term, trunc, _ = env.step(np.zeros(4, dtype=np.int64))
        assert not (term.any() or trunc.any())
        ctx.append(obs["context"][:, :2])
        hist.append(obs["history_features"][:, -1, 3:5])
    ctx = np.stack(ctx)
    for t in range(period):
        np.testing.assert_allclose(ctx[t + period], ctx[t], atol=1e-4)
        np.testing.assert_allclose(ctx[t + period // 2], -ctx[t], atol=1e-4)
    assert np.all(np.linalg.norm(ctx[period // 2] - ctx[0], axis=1) > 1.9)  # half a period: the opposite point
    # The history records the season at which each interaction happened.
    np.testing.assert_allclose(np.stack(hist), ctx[:-1], atol=1e-5)
    # The progress feature counts steps of the episode.
    np.testing.assert_allclose(obs["context"][:, 2], 2 * period / 40)


# -------------------------------------------------------------------- social
def _neighbour_distance(w: World) -> float:
    i = w.state.interest
    return float(np.linalg.norm(i[:, None, :] - i[w.state.drift["social"].neighbours], axis=-1).mean())


def test_social_contagion_pulls_neighbours_together(make_world):
    """Neighbour pull alone (trend pull off): graph neighbours' interests converge."""
    ratios = {}
    for on in (True, False):
        w = make_world("social", {"social": {"enabled": on, "trend_rate": 0.0}}, n_users=64, seed=0)
        rng = np.random.default_rng(0)
        d0 = _neighbour_distance(w)
        for _ in range(100):
            w.step(rng.integers(0, w.catalog.n_initial, size=(64, 1)))
        ratios[on] = _neighbour_distance(w) / d0
    assert ratios[False] == pytest.approx(1.0, abs=1e-6)
    assert ratios[True] < 0.8 * ratios[False]


def test_trend_pull_warms_users_to_trending_topics_only(make_world):
    """Trend pull alone (neighbour pull off): interest rises in the topics the population consumes
    above their fair share, and stays put in the others (against a control without social drift)."""
    extra = {"social": {"neighbour_rate": 0.0, "trend_rate": 0.2}}
    w = make_world("social", extra, n_users=32, seed=1)
    control = make_world("social", {"social": {"enabled": False}}, n_users=32, seed=1)
    rng = np.random.default_rng(0)
    # Everyone is shown items of one topic, so that topic trends.
    topic0 = np.flatnonzero(w.catalog.dominant_topic[: w.catalog.n_initial] == 0)
    for _ in range(10):
        slates = rng.choice(topic0, size=(32, 1))
        w.step(slates)
        control.step(slates)
    np.testing.assert_array_equal(control.state.interest, control.state.initial_interest)
    strength = social.trend_strength(w.state.drift["social"].trend)
    change = w.state.interest - w.state.initial_interest
    trending, fading = strength > 0, strength == 0
    assert trending.any() and fading.any()
    assert change[:, trending].mean() > 0.05
    assert np.abs(change[:, fading]).mean() < 0.05 * change[:, trending].mean()
    assert change.min() >= -1e-6  # the trend never turns anyone against a topic


def test_social_graph_has_no_self_loops_and_follows_homophily():
    community = np.repeat(np.arange(4), 25)
    g = social.make_graph(community, SocialParams(degree=6, homophily=1.0), np.random.default_rng(0))
    assert g.shape == (100, 6)
    assert not np.any(g == np.arange(100)[:, None])
    # homophily 1: neighbours come from the own community (except self-loop fix-ups).
    assert np.mean(community[g] == community[:, None]) > 0.95


def test_trend_moves_toward_consumed_topics():
    params = SocialParams(enabled=True, trend_memory=0.5)
    trend = np.full(4, 0.25, dtype=np.float32)
    consumed = np.zeros((3, 4), dtype=np.float32)
    consumed[:, 2] = 1.0
    clicked = np.ones(3, dtype=bool)
    new = social.update_trend(trend, consumed, clicked, params)
    assert new[2] > trend[2] and new.sum() == pytest.approx(1.0)
    assert social.trend_strength(new)[2] > 0 and social.trend_strength(new)[0] == 0
    # Nobody clicked: no news.
    assert social.update_trend(trend, consumed, np.zeros(3, dtype=bool), params) is trend


# ---------------------------------------------------------- cognitive: satiation
SATIATION_ONLY = _merge(
    ALWAYS_CLICK,
    # A fast satiation rate: 8 binged items build satiation even for users who watch little of them.
    {"cognitive": {"reinforcement_rate": 0.0, "random_walk_std": 0.0, "novelty_weight": 0.0, "satiation_rate": 0.3}},
)


def test_satiation_builds_lowers_engagement_and_recovers(make_world):
    treat = make_world("cognitive", SATIATION_ONLY, n_users=16, seed=1)
    control = make_world("cognitive", SATIATION_ONLY, n_users=16, seed=1)
    k, items_k, j, items_j = _pure_topic_items(treat)
    probe = items_k[-1:]
    _show(treat, items_k[:-1], 8)  # binge topic k
    _show(control, items_j, 8)  # control watches another topic
    sat_k = treat.state.drift["cognitive"].satiation[:, k].copy()
    assert np.all(sat_k > control.state.drift["cognitive"].satiation[:, k] + 0.1)
    probe_items = np.full((16, 1), probe[0], dtype=np.int64)
    ee_treat = treat.expected_engagement(probe_items)[:, 0]
    ee_control = control.expected_engagement(probe_items)[:, 0]
    assert np.all(ee_treat < ee_control)
    # A break on another topic: satiation of k recovers.
    _show(treat, items_j, 10)
    assert np.all(treat.state.drift["cognitive"].satiation[:, k] < 0.8 * sat_k)
    assert np.all(treat.expected_engagement(probe_items)[:, 0] > ee_treat)


def test_satiation_recovers_without_consumption():
    params = cognitive.CognitiveParams(enabled=True, satiation_recovery=0.2)
    sat = np.full((2, 3), 0.5, dtype=np.float32)
    cognitive.update_satiation(sat, np.zeros((2, 3), np.float32), np.zeros(2, np.float32), params)
    np.testing.assert_allclose(sat, 0.4)


@pytest.mark.parametrize("enabled", [True, False])
def test_satiation_affects_utility_only_when_cognitive_on(make_world, enabled):
    w = make_world("cognitive", {"cognitive": {"enabled": enabled, "novelty_weight": 0.0}}, n_users=4)
    k, items_k, _, _ = _pure_topic_items(w)
    slates = np.tile(items_k[:3], (4, 1))
    fresh, _ = w.slate_utility(slates)
    w.state.drift["cognitive"].satiation[:, k] = 1.0
    bored, _ = w.slate_utility(slates)
    if enabled:
        assert np.all(bored < fresh - 0.5)
    else:
        np.testing.assert_array_equal(bored, fresh)


# ------------------------------------------------- cognitive: interest dynamics
@pytest.mark.parametrize("enabled", [True, False])
def test_reinforcement_raises_interest_in_consumed_topic(make_world, enabled):
    extra = _merge(ALWAYS_CLICK, {"cognitive": {"enabled": enabled, "reinforcement_rate": 0.2, "random_walk_std": 0.0}})
    w = make_world("cognitive", extra, n_users=16, seed=2)
    k, items_k, _, _ = _pure_topic_items(w)
    before = w.state.interest.copy()
    _show(w, items_k, 15)
    gain = w.state.interest - before
    if not enabled:
        np.testing.assert_array_equal(gain, 0.0)
        return
    room = before[:, k] < 0.99
    assert np.all(gain[room, k] > 0.05)
    others = np.delete(gain, k, axis=1)
    assert gain[:, k].mean() > 5 * np.abs(others).mean()


@pytest.mark.parametrize("std", [0.05, 0.0])
def test_random_walk_moves_interests_only_with_positive_std(make_world, std):
    extra = {"cognitive": {"reinforcement_rate": 0.0, "random_walk_std": std}}
    w = make_world("cognitive", extra, n_users=8, seed=3)
    before = w.state.interest.copy()
    rng = np.random.default_rng(0)
    for _ in range(10):
        w.step(rng.integers(0, w.catalog.n_initial, size=(8, 1)))
    change = np.abs(w.state.interest - before)
    if std:
        assert change.mean() > 0.05
    else:
        assert change.max() == 0.0


@pytest.mark.parametrize("weight", [2.0, 0.0])
def test_novelty_repeat_of_recent_item_has_lower_utility(make_world, weight):
    extra = _merge(
        ALWAYS_CLICK,
        {
            "cognitive": {
                "novelty_weight": weight,
                "satiation_weight": 0.0,
                "reinforcement_rate": 0.0,
                "random_walk_std": 0.0,
            }
        },
    )
    w = make_world("cognitive", extra, n_users=8, seed=4)
    seen = np.full((8, 1), 5, dtype=np.int64)
    unseen = np.full((8, 1), 6, dtype=np.int64)
    u_seen0, _ = w.slate_utility(seen)
    u_unseen0, _ = w.slate_utility(unseen)
    w.step(seen)
    assert np.all((w.state.recent_items == 5).any(axis=1))
    u_seen1, _ = w.slate_utility(seen)
    u_unseen1, _ = w.slate_utility(unseen)
    np.testing.assert_allclose(u_unseen1, u_unseen0, atol=1e-5)
    expected_drop = weight * w.state.drift["cognitive"].novelty_seeking[:, None]
    np.testing.assert_allclose(u_seen0 - u_seen1, expected_drop, atol=1e-5)
    if weight:
        assert np.all(u_seen1 < u_seen0 - 1e-3)


def test_repeat_penalty_fades_once_the_item_leaves_memory(make_world):
    extra = _merge(
        ALWAYS_CLICK,
        {
            "users": {"recent_items": 2},
            "cognitive": {
                "novelty_weight": 2.0,
                "satiation_weight": 0.0,
                "reinforcement_rate": 0.0,
                "random_walk_std": 0.0,
            },
        },
    )
    w = make_world("cognitive", extra, n_users=4, seed=5)
    x = np.full((4, 1), 5, dtype=np.int64)
    u0, _ = w.slate_utility(x)
    w.step(x)
    _show(w, np.array([7, 8]), 2)  # two other items push item 5 out of a memory of 2
    u1, _ = w.slate_utility(x)
    np.testing.assert_allclose(u1, u0, atol=1e-5)


@pytest.mark.parametrize("rewatch", [0.2, 0.0])
def test_a_repeat_of_a_recent_item_is_watched_less(make_world, rewatch):
    """Treatment (rewatch < 1) against control (1) on common random numbers: a repeat of an item the
    user just watched gets `rewatch` of the control's watch time, in the step and in the expected
    engagement the oracles plan with; a fresh item is watched as in the control."""
    quiet = {"satiation_weight": 0.0, "reinforcement_rate": 0.0, "random_walk_std": 0.0, "novelty_weight": 0.0}
    worlds = {
        r: make_world("cognitive", _merge(ALWAYS_CLICK, LONG_SESSIONS, {"cognitive": {**quiet, "rewatch": r}}), 8, 3)
        for r in (rewatch, 1.0)
    }
    item, other = np.full((8, 1), 5, dtype=np.int64), np.full((8, 1), 6, dtype=np.int64)
    first = {r: w.step(item).watch_time for r, w in worlds.items()}
    np.testing.assert_allclose(first[rewatch], first[1.0])  # a first view: no difference
    both = np.concatenate([item, other], axis=1)
    expected = {r: w.expected_engagement(both) for r, w in worlds.items()}
    np.testing.assert_allclose(expected[rewatch], expected[1.0] * [rewatch, 1.0], rtol=1e-5)
    again = {r: w.step(item).watch_time for r, w in worlds.items()}
    assert (again[1.0] > 0).all()
    np.testing.assert_allclose(again[rewatch], rewatch * again[1.0], rtol=1e-5)
    fresh = {r: w.step(other).watch_time for r, w in worlds.items()}
    np.testing.assert_allclose(fresh[rewatch], fresh[1.0], rtol=1e-5)


def test_rewatch_scales_with_the_magnitude_and_is_off_with_the_family():
    slates, recent = np.array([[5, 6]]), np.array([[5, -1]])
    factor = lambda **kw: cognitive.rewatch_factor(slates, recent, cognitive.CognitiveParams(**kw))  # noqa: E731
    np.testing.assert_allclose(factor(enabled=True, rewatch=0.6), [[0.6, 1.0]])
    np.testing.assert_allclose(factor(enabled=True, rewatch=0.6, magnitude=2.0), [[0.2, 1.0]])
    np.testing.assert_allclose(factor(enabled=True, rewatch=0.2, magnitude=2.0), [[0.0, 1.0]])  # at least 0
    assert factor(enabled=False, rewatch=0.2) is None and factor(enabled=True) is None
    with pytest.raises(ValueError, match="rewatch"):
        cognitive.CognitiveParams(rewatch=1.5)


def test_fresh_arrivals_get_a_decaying_bonus():
    arrival = np.array([[0, 5, 5, 5]])
    f = cognitive.freshness(arrival, np.array([5]), 10.0)[0]
    assert f[0] == 0.0 and f[1] == pytest.approx(1.0)
    later = cognitive.freshness(arrival, np.array([15]), 10.0)[0]
    assert later[1] == pytest.approx(np.exp(-1.0), rel=1e-5)


# -------------------------------------------------------------------- shocks
def _interest_trace(world: World, steps: int) -> np.ndarray:
    """[steps + 1, N, T] interests at episode steps 0..steps (random slates)."""
    rng = np.random.default_rng(0)
    trace = [world.state.interest.copy()]
    for _ in range(steps):
        world.step(rng.integers(0, world.catalog.n_initial, size=(world.n_users, 1)))
        trace.append(world.state.interest.copy())
    return np.stack(trace)


@pytest.mark.parametrize("enabled", [True, False])
def test_sudden_shock_jumps_affected_users_at_its_step(make_world, enabled):
    s = 5
    extra = {"shock": {"enabled": enabled, "events": [{"kind": "sudden", "step": s, "fraction": 0.5, "strength": 0.8}]}}
    w = make_world("shock", extra, n_users=64, seed=6)
    cps = w.change_points()
    target = w.state.drift["shock"].target.copy()
    trace = _interest_trace(w, 10)
    change = np.abs(np.diff(trace, axis=0)).sum(-1)  # [steps, N]: change of step t -> t+1
    if not enabled:
        assert cps == [] and change.max() == 0.0
        return
    assert len(cps) == 1 and cps[0]["kind"] == "sudden" and cps[0]["step"] == s
    affected = cps[0]["affected"]
    assert 0 < affected.sum() < 64
    np.testing.assert_array_equal(affected, w.state.drift["shock"].draw < 0.5)
    # The jump happens while the user is at episode step s (interest at s -> s+1).
    assert np.all(change[s, affected] > 0.1)
    assert change[s, ~affected].max() == 0.0
    assert np.delete(change, s, axis=0).max() == 0.0  # no change at neighbouring steps
    expected = trace[s, affected] + 0.8 * (target[affected] - trace[s, affected])
    np.testing.assert_allclose(trace[s + 1, affected], expected, atol=1e-5)


def test_shock_targets_are_another_communitys_tastes(make_world):
    """A shock moves users toward a profile drawn like a new user of another community, so it changes
    what they like, not how much there is to like."""
    w = make_world("shock", {"users": {"community_strength": 1.0, "n_communities": 4}}, n_users=256, seed=8)
    s = w.state
    # With community_strength 1 a profile is its community's centre: the target is another centre.
    own = np.abs(s.interest[:, None, :] - w.centres[None]).sum(-1).argmin(1)
    target = np.abs(s.drift["shock"].target[:, None, :] - w.centres[None]).sum(-1).argmin(1)
    np.testing.assert_array_equal(own, s.community)
    assert np.all(target != own)
    assert len(np.unique(target)) == 4
    np.testing.assert_allclose(s.drift["shock"].target, w.centres[target], atol=1e-6)


def test_gradual_shock_spreads_over_its_window(make_world):
    s, d = 4, 5
    extra = {
        "shock": {
            "enabled": True,
            "events": [{"kind": "gradual", "step": s, "duration": d, "fraction": 1.0, "strength": 0.8}],
        }
    }
    w = make_world("shock", extra, n_users=16, seed=7)
    cp = w.change_points()[0]
    assert (cp["step"], cp["end_step"]) == (s, s + d - 1)
    target = w.state.drift["shock"].target.copy()
    trace = _interest_trace(w, 12)
    change = np.abs(np.diff(trace, axis=0)).sum(-1)
    window = np.arange(s, s + d)
    assert np.all(change[window] > 0.0)
    assert np.delete(change, window, axis=0).max() == 0.0
    # Every step in the window covers only part of the move; together they cover `strength` of it.
    total = np.abs(trace[s + d] - trace[s]).sum(-1)
    assert np.all(change[window] < 0.5 * total)
    np.testing.assert_allclose(trace[s + d] - target, 0.2 * (trace[s] - target), atol=1e-4)


def test_shock_magnitude_scales_the_blend(make_world):
    extra = {"shock": {"magnitude": 0.5, "events": [{"kind": "sudden", "step": 2, "strength": 0.8}]}}
    w = make_world("shock", extra, n_users=8, seed=8)
    assert w.change_points()[0]["blend"] == pytest.approx(0.4)
    target = w.state.drift["shock"].target.copy()
    trace = _interest_trace(w, 3)
    np.testing.assert_allclose(trace[3], trace[2] + 0.4 * (target - trace[2]), atol=1e-5)
    zero = make_world("shock", {"shock": {"magnitude": 0.0}}, n_users=8, seed=8)
    assert zero.change_points() == []


@pytest.mark.parametrize("magnitude, count", [(1.0, 20), (0.5, 10)])
def test_injection_adds_items_at_its_step(make_world, magnitude, count):
    extra = {"shock": {"magnitude": magnitude, "events": [{"kind": "injection", "step": 7, "n_items": 20, "topic": 2}]}}
    w = make_world("shock", extra, n_users=2)
    cat = w.catalog
    assert cat.n_items == 100 + count and cat.n_initial == 100
    injected = np.flatnonzero(cat.arrival == 7)
    assert injected.size == count and injected.min() == 100
    assert np.mean(cat.dominant_topic[injected] == 2) > 0.8
    cp = w.change_points()[0]
    assert cp["kind"] == "injection" and cp["step"] == 7 and cp["affected"] is None


def test_candidates_never_include_items_before_arrival(make_cfg):
    extra = {
        "catalog": {"n_arrivals": 40, "arrival_window": 10},
        "shock": {"events": [{"kind": "injection", "step": 6, "n_items": 40}]},
        "env": {"max_steps": 12},
    }
    cfg = make_cfg("shock", extra)
    env = RecVectorEnv(num_envs=16, scenario=cfg, seed=0)
    obs, _ = env.reset(seed=1)
    arrival = env.world.catalog.arrival
    injected = set(np.flatnonzero(arrival == 6).tolist())
    rng = np.random.default_rng(0)
    saw_injected = saw_reset = False
    for _ in range(40):
        step = env.world.state.step
        cand_arrival = arrival[obs["candidate_items"]]
        assert np.all(cand_arrival <= step[:, None])
        saw_injected |= bool(injected & set(obs["candidate_items"].ravel().tolist()))
        obs, _, term, trunc, _ = env.step(rng.integers(0, 8, size=16))
        saw_reset |= bool((term | trunc).any())
    assert saw_injected and saw_reset
