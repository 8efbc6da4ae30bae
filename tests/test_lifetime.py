"""Users with lifetimes: calendar time, drift between visits, return visits and churn, the lifetime env.

Tiny configs; treatment against control on the same users (common random numbers) where a
mechanism is compared with itself switched off.
"""

from __future__ import annotations

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from agents.item_score import ATTRACTIVENESS, QUALITY, ItemScorePolicy
from agents.oracles import LifetimeOracle, MyopicOracle, SessionOracle
from envs import RecEnv, RecVectorEnv, make_scenario
from experiments.core.harness import evaluate
from simulator import World, WorldConfig, cognitive, family_names, lifetime, registered_families, seasonal, social
from simulator.drift import DriftFamily, DriftParams, GapContext, overrides
from simulator.lifetime import LifetimeParams

TINY_LIFE = {
    "catalog": {"n_items": 120, "n_arrivals": 20, "arrival_window": 20.0},
    "env": {"num_candidates": 8, "history_len": 16, "max_steps": 2000},
    "lifetime": {"horizon_days": 20.0},
}


def life_cfg(extra: dict | None = None):
    from simulator.params import merge_overrides

    return make_scenario("lifetime", merge_overrides(TINY_LIFE, extra))


def life_world(extra: dict | None = None, n_users: int = 64, seed: int = 0) -> World:
    return World(life_cfg(extra).world, n_users, seed)


def _gap(world: World, days: float, seed: int = 0) -> None:
    """Send every user away for `days` days through the families' between-visit hooks."""
    idx = np.arange(world.n_users)
    before = world.state.day.copy()
    noise = np.random.default_rng(seed).random((world.n_users, world.config.catalog.n_topics), dtype=np.float32)
    ctx = GapContext(idx=idx, day_before=before, day_after=before + days, noise={"cognitive": noise})
    for family in world.families:
        family.between_visits(world, ctx)
    world.state.day[:] = before + days


# -------------------------------------------------------------- one contract
def test_every_family_is_one_registered_module_with_the_shared_switches():
    assert family_names()[:4] == ("shock", "cognitive", "social", "seasonal")
    config = WorldConfig()
    for family in registered_families():
        assert isinstance(family, DriftFamily)
        params = getattr(config, family.name)
        assert params is config.params_of(family.name)
        assert isinstance(params, DriftParams) and isinstance(params, family.params)
        assert params.scale == 0.0  # off by default
        on = dataclasses.replace(params, enabled=True, magnitude=2.0)
        assert on.scale == 2.0
        with pytest.raises(ValueError, match=f"{family.name}.magnitude"):
            dataclasses.replace(params, magnitude=-1.0)
    for preset in ("seasonal", "social", "cognitive", "shock"):
        assert preset in envs.PRESETS and getattr(make_scenario(preset).world, preset).enabled


# ------------------------------------------------------------ between visits
@pytest.mark.parametrize("family", ["cognitive", "social"])
def test_a_month_away_moves_interests_more_than_a_day(family):
    on = {family: {"enabled": True}}
    others = {f: {"enabled": False} for f in ("cognitive", "social", "shock") if f != family}
    moved = {}
    for days in (1.0, 30.0):
        w = life_world({**others, **on}, n_users=256, seed=3)
        start = w.state.interest.copy()
        _gap(w, days)
        moved[days] = np.abs(w.state.interest - start).sum(axis=1).mean()
    control = life_world({**others, family: {"enabled": False}}, n_users=256, seed=3)
    start = control.state.interest.copy()
    _gap(control, 30.0)
    assert moved[30.0] > 2.0 * moved[1.0] > 0.0
    assert np.abs(control.state.interest - start).sum() == 0.0  # the family off: nothing moves


def test_satiation_built_in_a_session_has_faded_after_a_week():
    w = life_world({"cognitive": {"enabled": True}}, n_users=32)
    satiation = w.state.drift["cognitive"].satiation
    satiation[:] = 0.6  # as after a binge on every topic
    _gap(w, 7.0)
    assert satiation.max() < 0.6 * 0.5**6  # half a day's recovery per day, compounded
    assert satiation.min() > 0.0


def test_seasons_follow_the_date():
    w = life_world({"seasonal": {"weekly_amplitude": 0.0}}, n_users=4)
    in_season_now = np.argmax(seasonal.FAMILY.appeal(w, w.state), axis=1)
    w.state.day[:] += w.config.seasonal.period / 2  # half a year later
    w.clock_cache = {}  # the clock moved
    later = seasonal.FAMILY.appeal(w, w.state)
    assert np.all(np.argmax(later, axis=1) != in_season_now)
    # Every user sees the same season on the same date (one calendar).
    assert np.allclose(later, later[0], atol=0.02)  # first visits differ by hours only


def test_dated_shocks_hit_when_the_clock_passes_their_day():
    event = {"kind": "sudden", "day": 5.0, "fraction": 1.0, "strength": 0.8}
    w = life_world({"shock": {"events": [event]}, "cognitive": {"enabled": False}, "social": {"enabled": False}})
    start = w.state.interest.copy()
    _gap(w, 2.0)  # days ~0-3: before the date
    np.testing.assert_array_equal(w.state.interest, start)
    _gap(w, 4.0)  # crosses day 5
    assert np.abs(w.state.interest - start).sum(axis=1).min() > 0.1
    points = w.change_points()
    assert points[0]["day"] == 5.0 and points[0]["affected"].all()


def test_a_trend_sweeps_its_topic_over_its_window():
    event = {"kind": "trend", "day": 2.0, "duration": 4.0, "fraction": 1.0, "strength": 0.5, "topic": 3}
    w = life_world({"shock": {"events": [event]}, "cognitive": {"enabled": False}, "social": {"enabled": False}})
    start = w.state.interest.copy()
    _gap(w, 10.0)  # covers the whole window
    gain = w.state.interest[:, 3] - start[:, 3]
    np.testing.assert_allclose(gain, 0.5 * (1.0 - start[:, 3]), atol=1e-5)  # half the way to loving it
    others = np.delete(np.arange(w.config.catalog.n_topics), 3)
    np.testing.assert_array_equal(w.state.interest[:, others], start[:, others])
    assert w.change_points()[0]["topic"] == 3


def test_items_arrive_on_dates():
    w = life_world()
    late = w.catalog.arrival > 0
    assert late.sum() == 20 + 50  # regular arrivals and the injection of day 20
    assert w.catalog.arrival[late].max() <= 20.0 and not np.all(
        w.catalog.arrival[late] == np.round(w.catalog.arrival[late])
    )


# ----------------------------------------------------------- return and churn
def test_return_model_rewards_good_sessions():
    p = LifetimeParams()
    good = lifetime.return_rate(np.array([0.7]), np.array([0.05]), np.array([1.2]), np.ones(1), p)
    bad = lifetime.return_rate(np.array([0.3]), np.array([0.6]), np.array([0.4]), np.ones(1), p)
    assert good[0] > 2.0 * bad[0]
    assert (
        lifetime.churn_probability(np.array([0.3]), np.array([0.6]), p)[0]
        > 3 * lifetime.churn_probability(np.array([0.7]), np.array([0.05]), p)[0]
    )
    u = np.random.default_rng(0).random(20_000)
    for gap in ("exponential", "weibull"):
        days = lifetime.sample_gap(np.full(u.size, 0.5), u, dataclasses.replace(p, gap=gap, min_gap_days=0.0))
        assert days.mean() == pytest.approx(2.0, rel=0.05)  # mean 1 / rate


def test_clickbait_loses_more_users_than_quality_by_day_30():
    """The same users (common random numbers), two policies: who is still around at day 30."""
    cfg = life_cfg({"lifetime": {"horizon_days": 30.0}})
    t = cfg.world.catalog.n_topics
    gone = {}
    for name, column in (("clickbait", ATTRACTIVENESS), ("quality", QUALITY)):
        ev = evaluate(ItemScorePolicy.max_feature(t, column, name), cfg, 256, seed=7)
        gone[name] = ev.metrics["churn_rate"]
        assert ev.metrics["sessions_mean"] >= 1.0
    assert gone["clickbait"] > gone["quality"] + 0.05, gone


def test_the_next_visit_pays_for_a_long_horizon_reference():
    cfg = life_cfg()
    myopic = evaluate(MyopicOracle(), cfg, 128, seed=1).metrics
    session = evaluate(SessionOracle(), cfg, 128, seed=1).metrics
    life = evaluate(LifetimeOracle(), cfg, 128, seed=1).metrics
    assert life["return_mean"] > 1.25 * myopic["return_mean"]
    assert life["sessions_mean"] > myopic["sessions_mean"] and session["churn_rate"] < myopic["churn_rate"]


# ------------------------------------------------------------------- the env
def test_history_persists_across_sessions_and_info_counts_them():
    env = RecVectorEnv(16, life_cfg(), seed=0)
    obs, _ = env.reset(seed=0)
    rng = np.random.default_rng(0)
    crossed = 0
    for _ in range(300):
        before = obs
        obs, _, terminated, truncated, info = env.step(rng.integers(0, 8, size=16))
        back = info["session_end"] & ~(terminated | truncated) & info["served"]
        if back.any():
            i = np.flatnonzero(back)[0]
            assert info["gap"][i] > 0 and info["session"][i] >= 1
            # The history was not wiped: it moved on by one entry, the one just served.
            np.testing.assert_array_equal(obs["history_items"][i, :-1], before["history_items"][i, 1:])
            assert obs["context"][i, 5] > 0  # days away: the gap
            crossed += 1
        assert np.all(info["gap"][~info["session_end"]] == -1.0)
    assert crossed > 0
    assert obs["history_features"].shape[-1] == 7 and obs["context"].shape[-1] == 7


def test_the_first_step_of_a_session_is_marked_in_the_history():
    env = RecEnv(life_cfg({"users": {"past_interactions": 0}}), seed=1)
    obs, _ = env.reset(seed=1)
    obs, *_ = env.step(0)
    assert obs["history_features"][-1, 6] == 1.0  # opened the first session
    obs, *_ = env.step(0)
    assert obs["history_features"][-1, 6] == 0.0


def test_lifetime_env_is_registered_checked_and_reproducible():
    env = gym.make("DriftRec-Lifetime-v0", overrides=TINY_LIFE)
    check_env(env.unwrapped, skip_render_check=True)
    runs = []
    for _ in range(2):
        e = RecVectorEnv(8, life_cfg(), seed=11)
        obs, _ = e.reset(seed=11)
        rewards = []
        for t in range(60):
            obs, r, *_ = e.step(np.full(8, t % 8))
            rewards.append(r)
        runs.append((np.stack(rewards), obs["history_features"], e.world.state.day.copy()))
    for a, b in zip(*runs):
        np.testing.assert_array_equal(a, b)
    vec = gym.make_vec("DriftRec-Lifetime-v0", num_envs=4, vectorization_mode="vector_entry_point", overrides=TINY_LIFE)
    assert vec.config.world.lifetime.enabled


def test_episodes_end_at_churn_or_at_the_horizon():
    cfg = life_cfg({"lifetime": {"horizon_days": 3.0}})
    env = RecVectorEnv(32, cfg, seed=2)
    obs, _ = env.reset(seed=2)
    ended = np.zeros(32, bool)
    for _ in range(2000):
        obs, _, terminated, truncated, info = env.step(np.zeros(32, np.int64))
        live = info["served"]
        assert not np.any(truncated & terminated)
        assert np.all(info["day"][truncated & live] >= 3.0)  # a life is cut at the horizon...
        assert np.all(info["session_end"][(terminated | truncated) & live])  # ...at the end of a session
        ended |= terminated | truncated
        if ended.all():
            break
    assert ended.all()


def test_a_lifetime_world_copies_saves_and_loads(tmp_path):
    w = life_world(n_users=8, seed=4)
    slates = np.zeros((8, 1), np.int64)
    for _ in range(30):
        w.step(slates)
    path = tmp_path / "w.npz"
    w.save(path)
    c = w.copy()
    a = [w.step(slates).watch_time for _ in range(40)]
    b = [c.step(slates).watch_time for _ in range(40)]
    np.testing.assert_array_equal(a, b)
    fresh = World(w.config, 8, seed=99)  # another seed: the saved state and streams win
    fresh.load(path)
    np.testing.assert_array_equal([fresh.step(slates).watch_time for _ in range(40)], a)


def test_popularity_moves_with_what_the_population_watches():
    w = life_world({"catalog": {"popularity_memory": 0.05}}, n_users=64)
    prior = w.popularity.copy()
    item = int(np.argmin(prior[: w.catalog.n_initial]))  # the least popular item
    for _ in range(40):
        w.step(np.full((64, 1), item, np.int64))
    assert w.popularity[item] > 10 * prior[item]
    assert w.item_features[item, -1] > w.catalog.features[item, -1]  # observed: it climbed the ranking


def test_a_daily_interest_trace_for_plots():
    w = life_world(n_users=16)
    w.track(np.arange(4))
    slates = np.zeros((16, 1), np.int64)
    for _ in range(400):
        w.step(slates)
    trace = w.interest_trace()
    assert set(np.unique(trace["user"])) <= {0, 1, 2, 3} and trace["interest"].shape[1] == w.config.catalog.n_topics
    assert len(trace["day"]) > 0 and np.all(np.diff(trace["day"][trace["user"] == trace["user"][0]]) > 0)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"lifetime": {"horizon_days": 0}}, "lifetime.horizon_days"),
        ({"lifetime": {"horizon_days": -5}}, "lifetime.horizon_days"),
        ({"lifetime": {"return_rate": -0.1}}, "lifetime.return_rate"),
        ({"lifetime": {"return_rate": 0.0}}, "lifetime.return_rate"),
        ({"lifetime": {"gap": "pareto"}}, "lifetime.gap must be one of exponential, weibull"),
        ({"lifetime": {"gap_shape": 0.0}}, "lifetime.gap_shape"),
        ({"lifetime": {"churn_base": 1.0}}, "lifetime.churn_base"),
        ({"lifetime": {"horizon": 30}}, "unknown config key 'lifetime.horizon'"),
        ({"seasonal": {"unit": "step", "period": 60, "weekly_amplitude": 0.0}}, "seasonal.unit must be day"),
        ({"shock": {"events": [{"kind": "sudden", "step": 3}]}}, "day must be set"),
    ],
)
def test_bad_lifetime_settings_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        life_cfg(overrides)


def test_session_worlds_refuse_dated_events():
    with pytest.raises(ValueError, match="day is for lifetime worlds"):
        make_scenario("shock", {"shock": {"events": [{"kind": "sudden", "day": 3.0}]}})


def test_gap_hooks_are_pure_state_updates_on_the_users_away():
    w = life_world({"social": {"enabled": True}, "cognitive": {"enabled": True}}, n_users=16)
    idx = np.arange(0, 16, 2)
    before = w.state.interest.copy()
    ctx = GapContext(
        idx=idx,
        day_before=w.state.day[idx].copy(),
        day_after=w.state.day[idx] + 10.0,
        noise={"cognitive": np.full((8, 10), 0.9, np.float32)},
    )
    cognitive.FAMILY.between_visits(w, ctx)
    social.FAMILY.between_visits(w, ctx)
    changed = np.abs(w.state.interest - before).sum(axis=1) > 0
    assert changed[idx].all() and not changed[1::2].any()  # the users at home are untouched
    assert not overrides(seasonal.FAMILY, "between_visits")


# ------------------------------------------------------------ metrics over days
def test_retention_has_a_known_answer():
    from experiments.core.harness import retention

    first = np.array([0.0, 0.5, 0.2, 0.9])
    last = np.array([0.1, 8.0, 31.0, 3.0])  # active since first for 0.1, 7.5, 30.8, 2.1 days
    np.testing.assert_allclose(retention(first, last, np.array([0, 1, 7, 30]), horizon=40.0), [1.0, 0.75, 0.5, 0.25])
    assert np.isnan(retention(first, last, np.array([30]), horizon=20.0)[0])  # not observable: NaN, not 0
    # First visits spread over the calendar: a day counts only the users followed that long.
    first, last = np.array([0.0, 0.0, 25.0, 35.0]), np.array([31.0, 5.0, 40.0, 39.0])
    np.testing.assert_allclose(retention(first, last, np.array([1, 7, 30]), horizon=40.0), [1.0, 2 / 3, 0.5])


def test_lifetime_evaluations_report_retention_and_per_day_curves():
    cfg = life_cfg({"lifetime": {"horizon_days": 10.0}})
    ev = evaluate(SessionOracle(), cfg, 64, seed=3)
    m = ev.metrics
    assert 0 <= m["retention_d7"] <= m["retention_d1"] <= 1 and np.isnan(m["retention_d30"])
    assert m["watch_per_active_day"] > 0 and (ev.episodes.active_days >= 1).all()
    assert list(ev.by_day.columns) == ["day", "active_users", "watch_per_active_user", "retention"]
    assert ev.by_day.active_users.iloc[0] == 64 and np.all(np.diff(ev.by_day.retention.dropna()) <= 0)


def test_long_evaluations_report_progress_with_the_day(monkeypatch):
    from experiments.core import harness

    monkeypatch.setattr(harness, "PROGRESS_SECONDS", 0.0)  # a line every step
    said: list[str] = []
    quiet = evaluate(SessionOracle(), life_cfg({"lifetime": {"horizon_days": 4.0}}), 16, seed=3)
    ev = evaluate(SessionOracle(), life_cfg({"lifetime": {"horizon_days": 4.0}}), 16, seed=3, progress=said.append)
    assert len(said) == len(ev.timeline)  # before every step
    assert said[0].startswith("evaluating: step 0, 16 of 16 users live, day 0.")
    days = [float(line.split("day ")[1].split(" of")[0]) for line in said]
    assert np.all(np.diff(days) >= 0) and days[-1] <= 4.0 and said[-1].endswith("of 4")
    np.testing.assert_equal(ev.metrics, quiet.metrics)  # reporting changes nothing


def test_lifetime_runs_default_to_a_15_minute_budget_under_flags_and_config(tmp_path):
    from dataclasses import asdict

    from agents.registry import get_agent
    from experiments.core.flags import build_parser, settings_from_args
    from experiments.core.harness import EVAL_SEED
    from experiments.core.settings import LIFETIME_RUN_DEFAULTS, config_label

    settings = lambda *argv: settings_from_args(build_parser().parse_args(list(argv)))  # noqa: E731

    life = settings("--scenario", "lifetime")
    session = settings("--scenario", "mixed")
    assert (life.steps, life.final_eval_users, life.eval_users) == tuple(
        LIFETIME_RUN_DEFAULTS[k] for k in ("steps", "final_eval_users", "eval_users")
    )
    # PPO learns its critic first and keeps its best snapshot on validation users, evaluated 12 times.
    ppo = get_agent("ppo").lifetime  # the registry entry holds PPO's lifetime defaults
    assert life.keep_best and life.eval_seed != EVAL_SEED
    assert life.interval == life.steps // ppo.keep_best_evaluations == 4_096
    assert dict(life.algo) == {**ppo.algo, **ppo.keep_best_algo}
    assert life.params.critic_warmup_steps == 16_384
    # It reads the history once per trajectory everywhere and discounts over calendar days on lifetimes only
    # (sessions: gamma per step); a config file's model: section wins.
    assert life.resolved_model["history_mode"] == "stream" and life.params.gamma_per_day == 0.9
    assert session.resolved_model["history_mode"] == "stream" and session.params.gamma_per_day == 0
    window = tmp_path / "window.yaml"
    window.write_text("model: {history_mode: window}\nalgo: {gamma_per_day: 0}\n")
    pinned = settings("--scenario", "lifetime", "--config", str(window))
    assert pinned.resolved_model["history_mode"] == "window" and pinned.params.gamma_per_day == 0
    plain = settings("--scenario", "lifetime", "--no-keep-best")
    assert not plain.keep_best and plain.eval_seed == EVAL_SEED and plain.interval == plain.steps // 2
    assert (session.steps, session.final_eval_users, dict(session.algo)) == (250_000, 1024, {})
    # Flags and the config file win; the interval follows the steps given; smoke sizes win too.
    cfg = tmp_path / "c.yaml"
    cfg.write_text("algo: {pretrain_epochs: 0}\n")
    mine = settings("--scenario", "lifetime", "--steps", "1000", "--final-eval-users", "8", "--config", str(cfg))
    assert (mine.steps, mine.interval, mine.final_eval_users, mine.algo["pretrain_epochs"]) == (1000, 83, 8, 0)
    smoke = settings("--scenario", "lifetime", "--smoke")
    assert smoke.steps == 512 and smoke.interval == 51
    assert not smoke.keep_best and smoke.params.critic_warmup_steps == 0  # toy runs are shorter than the warm-up
    assert smoke.algo["log_users"] < ppo.algo["log_users"]
    # Agents without lifetime algo defaults get the run sizes only.
    sasrec = settings("--agent", "sasrec", "--scenario", "lifetime")
    assert dict(sasrec.algo) == {} and not sasrec.keep_best and sasrec.interval == sasrec.steps // 2
    # compare.py labels configurations against these defaults: default lifetime runs pool unlabelled.
    assert config_label(asdict(life)) == config_label(asdict(sasrec)) == "" != config_label(asdict(mine))
    # A setting written out at the agent's own default is the same configuration: the same label.
    written = {**asdict(life), "algo": {**life.algo, "gamma": type(life.params)().gamma}}
    assert config_label(written) == ""
    assert config_label(asdict(plain)) != "" and config_label({**asdict(plain), "algo": {"lr": 1e-4}}) not in (
        "",
        config_label(asdict(plain)),
    )


# ------------------------------------------------------------ every agent on lifetimes
@pytest.mark.parametrize("agent", sorted(__import__("agents.registry", fromlist=["AGENTS"]).AGENTS))
def test_every_agent_runs_a_smoke_lifetime_through_the_harness(cli, agent, tmp_path):
    import pandas as pd

    assert cli("run", ["--agent", agent, "--scenario", "lifetime", "--smoke", "--logdir", str(tmp_path)]) == 0
    (results,) = list(tmp_path.glob("lifetime/*/*/results.csv"))
    final = pd.read_csv(results).query("phase == 'final'")
    assert final.return_mean.notna().all() and {"retention_d1", "sessions_mean", "churn_rate"} <= set(final.columns)
    assert (results.parent / "eval_by_day.csv").is_file()
