"""Every baseline through the one factory, compare.py's table, and the seed-level statistics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.oracles import LookaheadOracle, LookaheadParams, SessionOracle
from agents.registry import AGENTS, get_agent
from envs import RecVectorEnv, make_scenario
from experiments.core.harness import retention
from experiments.core.stats import mean_interval
from experiments.studies.comparison import analysis

TINY = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 20}}
SMALL_ALGO = {
    "popularity": {"log_users": 16, "log_steps": 30},
    "sasrec": {"log_users": 16, "log_steps": 30, "epochs": 1},
    "gru4rec": {"log_users": 16, "log_steps": 30, "epochs": 1},
    "oracle-lookahead": {"top": 2, "rollouts": 2, "horizon": 4},
}
SMALL_MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1}


@pytest.mark.parametrize("name", [n for n, e in AGENTS.items() if not e.trains])
@pytest.mark.parametrize("slate_size", [1, 2])
def test_every_baseline_acts_validly(name, slate_size, tmp_path):
    scenario = make_scenario("mixed", {**TINY, "env": {**TINY["env"], "slate_size": slate_size}})
    algo = {**get_agent(name).smoke, **SMALL_ALGO.get(name, {})}  # toy sizes: acting validly is the point
    policy = get_agent(name).build(scenario, algo, seed=0, device="cpu", model=SMALL_MODEL, run_dir=tmp_path)
    env = RecVectorEnv(6, scenario, seed=3)
    if hasattr(policy, "bind"):
        policy.bind(env)
    obs, _ = env.reset(seed=3)
    for _ in range(3):
        actions = np.asarray(policy.act(obs))
        assert actions.shape == ((6,) if slate_size == 1 else (6, slate_size))
        assert actions.min() >= 0 and actions.max() < 8
        if slate_size > 1:
            assert all(len(set(row)) == slate_size for row in actions)
        next_obs, reward, terminated, truncated, info = env.step(actions)
        if hasattr(policy, "observe"):
            policy.observe(obs, actions, reward, info)
        obs = next_obs


def test_baselines_reject_unknown_settings(tmp_path):
    scenario = make_scenario("mixed", TINY)
    for name in ("popularity", "bandit", "sasrec", "oracle-myopic"):
        with pytest.raises(ValueError, match="typo"):
            get_agent(name).build(scenario, {"typo": 1}, seed=0, device="cpu", model={}, run_dir=tmp_path)


def test_lookahead_with_a_shortlist_of_one_is_the_session_oracle():
    scenario = make_scenario("mixed", TINY)
    env = RecVectorEnv(8, scenario, seed=0)
    lookahead, session = LookaheadOracle(LookaheadParams(top=1, rollouts=2, horizon=3)), SessionOracle()
    lookahead.bind(env)
    session.bind(env)
    obs, _ = env.reset(seed=0)
    for _ in range(4):
        a = lookahead.act(obs)
        np.testing.assert_array_equal(a, session.act(obs))
        obs, *_ = env.step(a)


def test_lookahead_planning_leaves_the_real_env_untouched():
    env = RecVectorEnv(4, make_scenario("mixed", TINY), seed=0)
    oracle = LookaheadOracle(LookaheadParams(top=3, rollouts=2, horizon=5))
    oracle.bind(env)
    obs, _ = env.reset(seed=0)
    before = {k: v.copy() for k, v in env.world.state.arrays().items()}
    rng_state = env.world.step_rng.bit_generator.state
    oracle.act(obs)
    for k, v in env.world.state.arrays().items():
        np.testing.assert_array_equal(v, before[k])
    assert env.world.step_rng.bit_generator.state == rng_state


def test_seed_interval_shrinks_with_more_seeds():
    rng = np.random.default_rng(0)
    widths = []
    for n in (3, 10, 100):
        # Mean width over 30 synthetic experiments of n seeds each.
        bounds = np.array([mean_interval(rng.normal(50.0, 5.0, size=n)) for _ in range(30)])
        assert np.all(bounds[:, 0] < bounds[:, 1])
        widths.append((bounds[:, 1] - bounds[:, 0]).mean())
    assert widths[0] > widths[1] > widths[2]
    # Close to the normal-theory width 2 * 1.96 * sigma / sqrt(n) at n = 100.
    assert widths[2] == pytest.approx(2 * 1.96 * 5.0 / 10.0, rel=0.2)
    assert np.isnan(mean_interval([1.0])[0])
    with pytest.raises(ValueError):
        mean_interval([1.0, 2.0], confidence=1.5)


def test_seed_interval_holds_its_coverage_with_three_seeds():
    """What the tables rest on: with 3 seeds a 95% interval covers the true mean about 95% of the
    time (a percentile bootstrap of 3 values covers about 78%)."""
    rng = np.random.default_rng(1)
    covered = [lo <= 50.0 <= hi for lo, hi in (mean_interval(rng.normal(50.0, 5.0, size=3)) for _ in range(2000))]
    assert np.mean(covered) == pytest.approx(0.95, abs=0.02)


def test_compare_builds_its_table_from_tiny_runs(cli, tmp_path, capsys):
    for agent in ("random", "oracle-session"):
        assert cli("run", ["--agent", agent, "--smoke", "--seeds", "0", "1", "--logdir", str(tmp_path / "runs")]) == 0
    out = tmp_path / "report"
    assert cli("compare", [str(tmp_path / "runs"), "--out", str(out), "--reference", "oracle-session"]) == 0
    table = pd.read_csv(out / "comparison.csv")
    ret = table[table.metric == "return_mean"].set_index("agent")
    assert set(ret.index) == {"random", "oracle-session"} and (ret.seeds == 2).all()
    assert ret.loc["oracle-session", "mean"] > ret.loc["random", "mean"]
    regret = table[table.metric == "regret"].set_index("agent")["mean"]
    assert regret["oracle-session"] == pytest.approx(0.0, abs=1e-9) and regret["random"] > 0
    assert "| oracle-session | 2 |" in (out / "comparison.md").read_text()
    ranked = pd.read_csv(out / "robust.csv")
    assert ranked.agent.tolist() == ["oracle-session", "random"] and ranked.over.fillna("").tolist() == ["random", ""]
    assert "IQM and probability of improvement" in (out / "comparison.md").read_text()
    assert (out / "return.png").stat().st_size > 1000


def test_compare_without_runs_is_an_error(cli, tmp_path, capsys):
    assert cli("compare", [str(tmp_path)]) == 2
    assert "no finished runs" in capsys.readouterr().err


def test_compare_shows_retention_and_plots_per_day_curves_on_lifetimes(cli, tmp_path, capsys):
    for agent in ("random", "oracle-session"):
        argv = ["--agent", agent, "--scenario", "lifetime", "--smoke", "--seeds", "0", "1"]
        assert cli("run", [*argv, "--logdir", str(tmp_path / "runs")]) == 0
    out = tmp_path / "report"
    assert cli("compare", [str(tmp_path / "runs"), "--out", str(out), "--reference", "oracle-session"]) == 0
    table = pd.read_csv(out / "comparison.csv")
    assert {"retention_d1", "churn_rate", "sessions_mean", "watch_per_active_day"} <= set(table.metric)
    assert "retention_d1" in (out / "comparison.md").read_text()
    curves = pd.read_csv(out / "by_day.csv")
    assert set(curves.agent) == {"random", "oracle-session"} and set(curves.curve) == {
        "retention",
        "watch_per_active_user",
    }
    day0 = curves[(curves.day == 0) & (curves.curve == "retention")]
    assert np.allclose(day0["mean"], 1.0)  # every user is active on the day of their first visit
    assert (out / "by_day_lifetime.png").stat().st_size > 1000
    # Retention given day 1, from the same curves: per seed r(1 + D) / r(1), then over seeds.
    assert cli("compare", [str(tmp_path / "runs"), "--out", str(out), "--from-day", "1", "--after-days", "1"]) == 0
    given = pd.read_csv(out / "comparison.csv").query("metric == 'retention_d2_given_d1'").set_index("agent")
    for agent, g in analysis.load_by_day(analysis.load_runs([tmp_path / "runs"])).groupby("agent"):
        r = g.pivot(index="seed", columns="day", values="retention")
        assert given.loc[agent, "mean"] == pytest.approx((r[2] / r[1]).mean())
    assert "retention_d2_given_d1" in (out / "comparison.md").read_text()
    assert cli("compare", [str(tmp_path / "runs"), "--out", str(out), "--from-day", "400"]) == 2
    assert "--from-day 400 is past the runs' last day" in capsys.readouterr().err


def test_retention_given_a_day_is_the_share_of_that_days_users_still_there_later():
    rng = np.random.default_rng(0)
    first, last = np.zeros(1000), rng.uniform(0.0, 60.0, 1000)  # every first visit on day 0, a 60-day horizon
    days = np.arange(61)
    curve = pd.DataFrame(dict(day=days, retention=retention(first, last, days, 60.0)))
    given = analysis.from_day(curve, 0.0, 30, (7, 21, 40))
    assert given["retention_d37_given_d30"] == pytest.approx((last >= 37).sum() / (last >= 30).sum())
    assert given["retention_d51_given_d30"] == pytest.approx((last >= 51).sum() / (last >= 30).sum())
    assert np.isnan(given["retention_d70_given_d30"])  # the curve stops at day 60
    nobody = pd.DataFrame(dict(day=[0, 1, 2], retention=[1.0, 0.0, 0.0]))
    assert np.isnan(analysis.from_day(nobody, 0.0, 1, (1,))["retention_d2_given_d1"])  # nobody left on day 1


def test_watch_from_the_deployment_day_is_what_the_deployed_model_served(cli, tmp_path, capsys):
    """A supervised model deployed on day T: compare's watch_from_d<T>, read from the per-day curves,
    is the harness's return_served_mean (minutes per user watched from T on, under the model)."""
    (tmp_path / "day1.yaml").write_text("algo: {train_days: 1}\n")  # toy lives are short: deployed on day 1
    argv = ["--agent", "sasrec", "--scenario", "lifetime", "--smoke", "--seed", "0"]
    argv += ["--config", str(tmp_path / "day1.yaml")]
    assert cli("run", [*argv, "--logdir", str(tmp_path / "runs")]) == 0
    (results,) = (tmp_path / "runs").rglob("results.csv")
    final = pd.read_csv(results).query("phase == 'final'").iloc[-1]
    day = int(final.served_from_day)
    assert day == final.served_from_day > 0 and final.return_served_mean > 0
    assert cli("compare", [str(tmp_path / "runs"), "--out", str(tmp_path / "o"), "--from-day", str(day)]) == 0
    table = pd.read_csv(tmp_path / "o" / "comparison.csv").query("agent == 'sasrec'").set_index("metric")["mean"]
    assert table[f"watch_from_d{day}"] == pytest.approx(final.return_served_mean, rel=1e-9)
    assert table[f"watch_from_d{day}"] < table["return_mean"]  # the logging policy served the days before T


def test_compare_rejects_a_bad_retention_day(cli, tmp_path, capsys):
    assert cli("run", ["--agent", "random", "--smoke", "--seeds", "0", "--logdir", str(tmp_path / "runs")]) == 0
    compare_with = [str(tmp_path / "runs"), "--out", str(tmp_path / "o")]
    for flags, message in [
        (["--from-day", "-3"], "--from-day must be a day >= 0, got -3"),
        (["--from-day", "3", "--after-days", "0"], "--after-days must be days >= 1"),
        (["--after-days", "7"], "--after-days reads retention given a day: it needs --from-day T"),
        (["--from-day", "30"], "--from-day needs lifetime runs"),
    ]:
        assert cli("compare", [*compare_with, *flags]) == 2
        assert message in capsys.readouterr().err


def test_robust_statistics_follow_their_definitions():
    from experiments.core.stats import improvement_interval, iqm, probability_of_improvement, stratified_bootstrap

    assert iqm([1, 2, 3, 4, 100, 5, 6, 7]) == 4.5  # the middle half of 8 runs: 3, 4, 5, 6
    assert iqm([[1.0, 9.0], [5.0, 5.0]]) == 5.0  # pooled over tasks
    # Ties count half; the mean over tasks, not over pooled pairs.
    assert probability_of_improvement([[2, 3], [1]], [[1, 3], [1]]) == pytest.approx((2.5 / 4 + 1 / 2) / 2)
    point, low, high = stratified_bootstrap([[1.0, 2.0, 3.0, 4.0], [10.0, 11.0, 12.0, 13.0]], reps=500)
    assert point == iqm([1, 2, 3, 4, 10, 11, 12, 13]) and low <= point <= high
    # Redrawn within each task: a task with one identical value keeps it in every replicate.
    assert stratified_bootstrap([[5.0, 5.0, 5.0]], reps=200)[1:] == (5.0, 5.0)
    p, low, high = improvement_interval([[3.0, 4.0, 5.0]], [[0.0, 1.0, 2.0]], reps=200)
    assert p == 1.0 and low == high == 1.0  # X beats Y in every pair, in every replicate


def test_the_robust_table_ranks_by_iqm_and_compares_each_agent_with_the_next():
    from experiments.core.stats import iqm, probability_of_improvement
    from experiments.studies.comparison.analysis import robust

    returns = {"a": [10.0, 11.0, 12.0, 13.0, 14.0], "b": [9.0, 9.5, 10.0, 10.5, 60.0], "c": [3.0]}
    runs = pd.DataFrame(
        [dict(scenario=s, agent=a, return_mean=r + (s == "y")) for s in "xy" for a, rs in returns.items() for r in rs]
    )
    table = robust(runs)
    x = table[table.scenario == "x"].set_index("agent")
    assert x.index.tolist() == ["a", "b", "c"]  # by IQM: 12 against b's 10 (b's mean, 19.8, is its outlier's)
    assert x.loc["a", "iqm"] == iqm(returns["a"]) == 12.0 and x.loc["a", "iqm_low"] <= 12.0 <= x.loc["a", "iqm_high"]
    assert x.loc["a", "over"] == "b"
    assert x.loc["a", "p_improvement"] == pytest.approx(probability_of_improvement([returns["a"]], [returns["b"]]))
    # One seed: an IQM without interval, and no interval for a probability against it.
    assert np.isnan(x.loc["c", "iqm_low"]) and np.isnan(x.loc["b", "p_low"]) and x.loc["b", "p_improvement"] == 1.0
    assert table[table.scenario == "y"].set_index("agent").loc["a", "iqm"] == 13.0  # per scenario


def test_learning_curves_average_each_evaluation_over_seeds_and_plot_them(tmp_path):
    """Each run's evaluations during training (results.csv's train rows, in order) are averaged over seeds
    evaluation by evaluation, with the t interval; final and baseline rows are not part of the curve."""
    tables = []
    returns = {0: [10.0, 30.0, 20.0], 1: [14.0, 34.0, 28.0]}
    for seed, values in returns.items():
        table = pd.DataFrame(
            dict(
                phase=["train", "train", "train", "final", "baseline"],
                env_steps=[100 + seed, 200 + seed, 300 + seed, 200 + seed, 200 + seed],
                return_mean=[*values, 99.0, 1.0],
            )
        )
        tables.append(table.assign(scenario="lifetime", agent="ppo", seed=seed))
    tables.append(
        pd.DataFrame(dict(phase=["final"], env_steps=[0], return_mean=[5.0])).assign(
            scenario="lifetime", agent="random", seed=0
        )
    )
    curves = analysis.learning_rows(pd.concat(tables, ignore_index=True))
    assert set(curves.agent) == {"ppo"} and len(curves) == 6
    summary = analysis.learning_summary(curves)
    assert summary.evaluation.tolist() == [0, 1, 2] and (summary.seeds == 2).all()
    np.testing.assert_allclose(summary.env_steps, [100.5, 200.5, 300.5])
    np.testing.assert_allclose(summary["mean"], [12.0, 32.0, 24.0])
    lo, hi = mean_interval(np.array([20.0, 28.0]))
    assert (summary.ci_low.iloc[2], summary.ci_high.iloc[2]) == pytest.approx((lo, hi))
    (path,) = analysis.plot_learning(summary, tmp_path)
    assert path.name == "learning_lifetime.png" and path.stat().st_size > 1000
