"""Drift stress tests: the analysis on synthetic curves, settings errors, and a tiny grid end to end."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from experiments.studies import stress as stresstest
from experiments.studies.stress import analysis as sa
from experiments.studies.stress import flags as stress_flags
from experiments.studies.stress.plots import is_png

TINY = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 20}}
# Refits of 2 minibatches of 64 rows (not 32 of 512): sasrec-retrain still refits as it serves, in a tenth of the time.
TINY_ALGO = {"sasrec": {"log_users": 16, "log_steps": 30, "epochs": 1, "refit_batches": 2, "batch_size": 64}}
TINY_MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1}


def stress_settings(*argv: str) -> stresstest.StressSettings:
    """The StressSettings stress.py builds from `argv`."""
    return stress_flags.settings_from_args(stress_flags.build_parser().parse_args(list(argv)))


def tiny_settings(**kw) -> stresstest.StressSettings:
    base = dict(
        agents=("bandit", "sasrec"),
        seeds=(0, 1),
        magnitudes=(0.0, 1.0, 2.0),
        eval_users=12,
        scenario_overrides=TINY,
        model=TINY_MODEL,
        algo=TINY_ALGO,
        reference="oracle-session",
        shock_step=4,
    )
    return stresstest.StressSettings(**{**base, **kw})


# ----------------------------------------------------------------- recovery on synthetic curves
def v_curve(shock=10, depth=0.5, climb=0.05, n=40) -> np.ndarray:
    """1 before the shock, `depth` at it, then back up by `climb` per step (capped at 1)."""
    t = np.arange(n)
    return np.where(t < shock, 1.0, np.minimum(1.0, depth + climb * (t - shock)))


def test_recovery_time_counts_steps_until_90_percent_of_the_pre_shock_level():
    # 0.5 + 0.05 k >= 0.9 first at k = 8.
    assert sa.recovery_time(v_curve(), shock_step=10, level=0.9, window=1) == 8
    # A scaled curve recovers at the same step: the level is relative to the pre-shock mean.
    assert sa.recovery_time(3.0 * v_curve(), shock_step=10, level=0.9, window=1) == 8
    # Smoothing (trailing mean over 3 steps) delays it: mean(0.9, 0.95, 1.0) at k = 10 is the first >= 0.9
    # after the smoothed curve has first fallen below the level.
    assert sa.recovery_time(v_curve(), shock_step=10, level=0.9, window=3) == 9
    # A shallower or slower dip changes the answer accordingly.
    assert sa.recovery_time(v_curve(depth=0.8, climb=0.01), shock_step=10, level=0.9, window=1) == 10


def test_recovery_time_is_zero_without_a_dip_and_nan_without_recovery():
    assert sa.recovery_time(np.ones(30), shock_step=10) == 0
    assert sa.recovery_time(v_curve(depth=0.95), shock_step=10, window=1) == 0
    assert np.isnan(sa.recovery_time(v_curve(climb=0.0), shock_step=10))
    with pytest.raises(ValueError, match="shock_step"):
        sa.recovery_time(np.ones(5), shock_step=5)


def test_reaction_time_is_steps_until_half_the_fit_drop_is_made_up():
    gap = np.zeros(30)
    gap[10:] = -0.4
    gap[12:] = np.minimum(0.0, -0.4 + 0.05 * np.arange(18))  # -0.4 until step 12, then climbs
    # Half the trough (-0.2) is reached 4 steps after the climb starts: step 16, 6 steps after 10.
    assert sa.reaction_time(gap, shock_step=10, window=1) == 6
    assert sa.reaction_time(np.zeros(30), shock_step=10) == 0
    assert np.isnan(sa.reaction_time(np.r_[np.zeros(10), -np.ones(20)], shock_step=10, window=1))


def test_shock_curves_divide_by_the_no_shock_run_and_drop_thin_steps():
    calm = pd.DataFrame(dict(step=range(6), active_users=[10, 10, 10, 10, 10, 0], engagement=[2.0] * 6, fit=[0.5] * 6))
    shocked = calm.assign(engagement=[2.0, 2.0, 1.0, 1.5, 2.0, 2.0], fit=[0.5, 0.5, 0.5, 0.1, 0.3, 0.5])
    c = sa.shock_curves(shocked, calm, n_users=10)
    np.testing.assert_allclose(c.engagement_ratio[:5], [1.0, 1.0, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(c.fit_gap[:5], [0, 0, 0, -0.4, -0.2], atol=1e-12)
    assert np.isnan(c.engagement_ratio[5])  # nobody left in session


# ------------------------------------------------------------------------- tables
def test_relative_return_and_regret_against_the_reference():
    grid = pd.DataFrame(
        dict(
            agent=["a", "a", "a", "b", "b", "b"],
            seed=[0] * 6,
            family=["none", "shock", "shock"] * 2,
            magnitude=[0.0, 1.0, 2.0] * 2,
            return_mean=[50.0, 40.0, 25.0, 40.0, 38.0, 36.0],
        )
    )
    ref = pd.DataFrame(
        dict(family=["none", "shock", "shock"], magnitude=[0.0, 1.0, 2.0], return_mean=[60.0, 55.0, 50.0])
    )
    g = sa.add_relative(grid, ref)
    np.testing.assert_allclose(g.relative_return, [1.0, 0.8, 0.5, 1.0, 0.95, 0.9])
    np.testing.assert_allclose(g.regret, [10, 15, 25, 20, 17, 14])
    np.testing.assert_allclose(g.regret_increase, [0, 5, 15, 0, -3, -6])
    table = sa.robustness_table(g)
    # The no-drift row stands in for magnitude 0 of every family.
    assert sorted(table[table.agent == "a"].magnitude) == [0.0, 1.0, 2.0]
    deg = sa.degradation(table)
    assert deg.set_index("agent").monotone_decrease.to_dict() == {"a": True, "b": True}
    assert sa.least_degraded(deg) == ("b", pytest.approx(0.9))
    with pytest.raises(ValueError, match="no no-drift evaluation"):
        sa.add_relative(grid[grid.agent == "b"].iloc[1:], ref)


# ----------------------------------------------------------------------- settings
@pytest.mark.parametrize(
    "kw, message",
    [
        (
            dict(families=("weather",)),
            "unknown drift family 'weather'; valid families: shock, cognitive, social, seasonal",
        ),
        (dict(magnitudes=(0.0, -1.0)), "magnitude"),
        (dict(agents=("nope",)), "unknown agent 'nope'"),
        (dict(agents=("bandit-retrain",)), "only sasrec and gru4rec retrain"),
        (dict(recovery_magnitude=3.0), "not among the magnitudes"),
        (dict(reference="ppo"), "needs no training"),
        (dict(scenario_overrides={"weather": {}}), "unknown config key 'weather'"),
    ],
)
def test_bad_settings_are_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny_settings(**kw)


def test_negative_magnitude_and_missing_checkpoint_exit_2_naming_the_problem(cli, tmp_path, capsys):
    assert cli("stress", ["--magnitudes", "0", "-1", "--out", str(tmp_path / "a")]) == 2
    assert "stress.magnitude" in capsys.readouterr().err
    missing = tmp_path / "no-such-run"
    assert cli("stress", ["--load", str(missing), "--out", str(tmp_path / "b")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert cli("stress", ["--families", "weather", "--out", str(tmp_path / "c")]) == 2
    assert "unknown drift family 'weather'" in capsys.readouterr().err


def test_magnitude_zero_is_the_training_regime_or_turns_the_family_off():
    calm = tiny_settings()
    regimes = calm.regimes()
    # On stationary, magnitude 0 of every family is the training regime itself: evaluated once.
    assert [(f, m) for f, m, _ in regimes if m == 0] == [("none", 0.0)]
    drifted = {(f, m) for f in stresstest.FAMILIES for m in (1.0, 2.0)}
    assert {(f, m) for f, m, _ in regimes} == {("none", 0.0)} | drifted
    shock = {m: cfg for f, m, cfg in regimes if f == "shock"}
    assert shock[2.0].world.shock.magnitude == 2.0 and shock[2.0].world.shock.events[0].step == 4
    # On mixed, magnitude 0 switches the family off.
    mixed = tiny_settings(train_scenario="mixed", magnitudes=(0.0,), families=("cognitive",))
    (_, train), (_, off) = [(f, cfg) for f, _, cfg in mixed.regimes()]
    assert train.world.cognitive.enabled and not off.world.cognitive.enabled


# ------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("stress")
    # Every family at magnitudes 0 and 1 (the regimes test covers 2): the grid, its report and recovery.
    settings = tiny_settings(agents=("bandit", "sasrec", "sasrec-retrain"), retrain_every=3, magnitudes=(0.0, 1.0))
    return settings, stresstest.stress(settings, out), out


def test_tiny_grid_writes_table_plots_report_and_tensorboard(tiny_run):
    settings, res, out = tiny_run
    for name in ("report.md", "robustness.csv", "robustness.md", "grid.csv", "recovery.csv", "timelines.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in ("robustness.png", "recovery.png", "topic_shares.png", "homogenisation.png"):
        assert is_png(out / name), name
    report = (out / "report.md").read_text()
    for section in (
        "## Which agent degrades least",
        "## Robustness",
        "## Shock recovery",
        "](robustness.png)",
        "](recovery.png)",
        "](topic_shares.png)",
        "](homogenisation.png)",
    ):
        assert section in report
    table = pd.read_csv(out / "robustness.csv")
    assert set(table.family) == set(stresstest.FAMILIES)
    assert set(table.agent) == {"bandit", "sasrec", "sasrec-retrain", "oracle-session"}
    assert (table[table.magnitude == 0].relative_return == 1.0).all()
    assert (table[table.agent == "oracle-session"].regret == 0).all()
    # sasrec-retrain is sasrec's fitted model refitting as it serves: same start, different numbers.
    g = res.grid.set_index(["agent", "seed", "family", "magnitude"]).return_mean
    assert not np.allclose(g["sasrec"].to_numpy(), g["sasrec-retrain"].to_numpy())
    # Two seeds: every agent's relative return has an interval except at magnitude 0 and for the reference.
    drifted = table[(table.magnitude > 0) & (table.agent != "oracle-session")]
    assert drifted.relative_return_lo.notna().all()
    tags = list((out / "tb").rglob("events.out.tfevents.*"))
    assert {p.parent.name for p in tags} == {"bandit", "sasrec", "sasrec-retrain", "oracle-session"}


def test_tiny_grid_recovery_uses_common_random_numbers(tiny_run):
    settings, res, _ = tiny_run
    before = res.curves[res.curves.step < settings.shock_step]
    # Same users, same noise, same policy: identical until the shock.
    np.testing.assert_allclose(before.engagement_ratio.dropna(), 1.0)
    np.testing.assert_allclose(before.fit_gap.dropna(), 0.0)
    assert set(res.recovery.agent) == {"bandit", "sasrec", "sasrec-retrain", "oracle-session"}
    assert res.recovery.post_shock_return.gt(0).all()
    assert (res.recovery[res.recovery.agent == "oracle-session"].post_shock_regret == 0).all()


def test_regimes_are_evaluated_on_fresh_copies_of_online_learners(tiny_run):
    """The bandit learns online: its no-drift evaluation must not depend on the other regimes run
    before, so repeating the job gives identical rows."""
    settings, res, out = tiny_run
    again = stresstest.run_job(settings, dict(agents=["bandit"], seed=0, load=None), str(out / "again"))
    first = res.grid[(res.grid.agent == "bandit") & (res.grid.seed == 0)].return_mean.to_numpy()
    np.testing.assert_allclose([r["return_mean"] for r in again["rows"]], first)


def test_report_only_redoes_the_outputs_from_the_saved_evaluations(cli, tiny_run, tmp_path, capsys):
    _, _, out = tiny_run
    before = pd.read_csv(out / "robustness.csv")
    (out / "report.md").unlink()
    assert cli("stress", ["--report-only", str(out)]) == 0
    assert (out / "report.md").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(out / "robustness.csv"), before)
    assert cli("stress", ["--report-only", str(tmp_path)]) == 2
    assert f"no settings.json in {tmp_path}" in capsys.readouterr().err


def test_an_interrupted_stress_test_resumes_from_its_saved_evaluations(tiny_run, tmp_path, monkeypatch, capsys):
    """Run again into the same directory, a stress test evaluates only what is not saved (a lost
    or corrupted evaluation) and gives the numbers of the uninterrupted run; a job whose
    evaluations are all saved is not even built."""
    import shutil

    from experiments.studies.stress import jobs

    settings, res, done = tiny_run
    out = tmp_path / "again"
    shutil.copytree(done, out)
    for name in ("grid.csv", "jobs.pkl", "report.md"):  # as if killed before the end
        (out / name).unlink()
    saved = sorted((out / jobs.EVALUATIONS).glob("*.pkl"))
    assert len(saved) == len(settings.regimes()) * (3 * 2 + 1)  # 3 agents x 2 seeds, and the reference
    lost = jobs.evaluation_path(out, "bandit", 1, "shock", 1.0)
    lost.unlink()
    corrupted = jobs.evaluation_path(out, "oracle-session", 0, "none", 0.0)
    corrupted.write_bytes(b"\x80\x04 truncated")
    calls, built = [], []
    real_evaluate, real_build = jobs.evaluate, jobs.build_policies
    monkeypatch.setattr(jobs, "evaluate", lambda *a, **kw: calls.append(1) or real_evaluate(*a, **kw))
    monkeypatch.setattr(jobs, "build_policies", lambda s, job, o: built.append(job["agents"]) or real_build(s, job, o))
    again = stresstest.stress(settings, out)
    # The bandit's warm-up pass over training users, then the two lost evaluations.
    assert len(calls) == 3 and built == [["bandit"], ["oracle-session"]]
    pd.testing.assert_frame_equal(again.grid, res.grid)
    err = capsys.readouterr().err
    assert "resuming the stress test" in err and f"{corrupted} is unreadable" in err
    regimes = len(settings.regimes())  # the seconds it took depend on the machine's load, not on the resume
    assert re.search(rf"bandit seed 1 done in \d+s \({regimes - 1} of {regimes} evaluations", err)
    assert "resumed" in (out / "report.md").read_text()


def test_a_stress_test_with_other_settings_is_refused_in_the_same_directory(cli, tiny_run, tmp_path, capsys):
    import shutil

    _, _, done = tiny_run
    out = tmp_path / "other"
    shutil.copytree(done, out)
    before = {p.name: p.stat().st_mtime_ns for p in out.rglob("*")}
    argv = ["--smoke", "--agents", "bandit", "--seeds", "0", "--reference", "oracle-session", "--out", str(out)]
    assert cli("stress", argv) == 2
    err = capsys.readouterr().err
    assert f"--out {out} holds a stress test with other settings" in err and "agents" in err
    assert {p.name: p.stat().st_mtime_ns for p in out.rglob("*")} == before  # nothing run, nothing written


def test_a_trained_agent_is_reused_when_finished_and_resumed_when_interrupted(tmp_path, monkeypatch):
    """The training run of a simulator-trained agent (PPO) lives under runs/: run again, a stress
    test restores a finished run, resumes an interrupted one from its checkpoint, or starts one."""
    import json

    from experiments.studies.stress import jobs

    settings = tiny_settings(agents=("ppo",), seeds=(3,), steps=64, algo={})
    calls = []

    def fake_run_one(run, logdir, resume=None):
        calls.append(resume)
        run_dir = resume or logdir / settings.train_scenario / "ppo" / f"{run.seed}-20260101-000000"
        (run_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
        (run_dir / "checkpoint" / "state.json").write_text("{}")
        (run_dir / "status.json").write_text(json.dumps(dict(status="finished")))
        return run_dir, {}

    monkeypatch.setattr(jobs, "run_one", fake_run_one)
    monkeypatch.setattr(jobs, "restore_policy", lambda run_dir, device: (None, f"policy of {run_dir.name}"))
    job = dict(agents=["ppo"], seed=3, load=None)
    assert jobs.build_policies(settings, job, tmp_path) == {"ppo": "policy of 3-20260101-000000"}
    assert calls == [None]  # a new run
    run_dir = tmp_path / "runs" / settings.train_scenario / "ppo" / "3-20260101-000000"
    assert jobs.build_policies(settings, job, tmp_path) == {"ppo": "policy of 3-20260101-000000"}
    assert calls == [None]  # finished: restored, not trained again
    (run_dir / "status.json").write_text(json.dumps(dict(status="interrupted")))
    jobs.build_policies(settings, job, tmp_path)
    assert calls == [None, run_dir]  # resumed from its checkpoint
    assert jobs.earlier_run(tmp_path / "runs", settings.train_scenario, "ppo", 4) is None  # another seed's


def test_config_file_sets_the_training_regime_and_agent_settings(tmp_path):
    cfg = tmp_path / "stress.yaml"
    cfg.write_text("scenario: {catalog: {n_items: 120}}\nmodel: {d_model: 16}\nalgo: {sasrec: {epochs: 2}}\n")
    args = stress_flags.build_parser().parse_args(["--config", str(cfg), "--agents", "sasrec", "bandit", "--smoke"])
    settings = stress_flags.settings_from_args(args)
    assert settings.train_config().world.catalog.n_items == 120
    assert settings.model["d_model"] == 16 and settings.algo["sasrec"]["epochs"] == 2
    assert settings.algo["sasrec"]["log_users"] == 16  # smoke sizes stay under the config's
    assert "ppo" not in settings.algo  # not stressed: its smoke sizes are dropped
    cfg.write_text("algo: {ppo: {lr: 0.001}}\n")
    with pytest.raises(ValueError, match="algo settings for 'ppo', which is not stressed"):
        stress_flags.settings_from_args(
            stress_flags.build_parser().parse_args(["--config", str(cfg), "--agents", "bandit"])
        )


def test_smoke_trains_ppo_then_load_stresses_its_checkpoint(cli, tmp_path):
    """The trainable path: --smoke trains PPO (SB3's: the path is the same for RLlib's, which takes
    longer to build) through run.py's loop, restores its checkpoint and stresses it; --load then
    stresses that checkpoint again, giving the same numbers."""
    common = [
        "--smoke",
        "--seeds",
        "0",
        "--families",
        "shock",
        "--magnitudes",
        "0",
        "1",
        "--reference",
        "oracle-session",
    ]
    assert cli("stress", common + ["--agents", "sb3-ppo", "--out", str(tmp_path / "train")]) == 0
    trained = pd.read_csv(tmp_path / "train" / "grid.csv")
    run_dir = next((tmp_path / "train" / "runs").rglob("checkpoint")).parent
    assert cli("stress", common + ["--load", str(run_dir), "--out", str(tmp_path / "load")]) == 0
    loaded = pd.read_csv(tmp_path / "load" / "grid.csv")
    ppo = lambda g: g[g.agent == "sb3-ppo"].return_mean.to_numpy()  # noqa: E731
    assert len(ppo(trained)) == 2
    np.testing.assert_allclose(ppo(loaded), ppo(trained))
    assert is_png(tmp_path / "load" / "recovery.png")


# ------------------------------------------------------------------ temporal mode (lifetimes)
# Tiny lives of 6 days, trained on days [0, 2), shocked on day 4. Social influence and the catalog's
# moving popularity are off: they couple users whose clocks diverge (one already past the shock sways
# another still before it); without them common random numbers make a shocked life identical to the
# calm one until the shock.
TINY_LIFE = {
    "catalog": {"n_items": 100, "popularity_memory": 0.0},
    "env": {"num_candidates": 8, "history_len": 8},
    "lifetime": {"horizon_days": 6},
    "social": {"enabled": False},
}
TINY_LIFE_ALGO = {"sasrec": {"log_users": 16, "epochs": 1, "batch_size": 128, "refit_batches": 4}}


def tiny_temporal(**kw) -> stresstest.StressSettings:
    base = dict(
        agents=("bandit", "sasrec", "sasrec-retrain"),
        families=("shock", "cognitive"),
        seeds=(0, 1),
        magnitudes=(0.0, 1.0, 2.0),
        eval_users=8,
        train_scenario="lifetime",
        scenario_overrides=TINY_LIFE,
        model=TINY_MODEL,
        algo=TINY_LIFE_ALGO,
        train_days=2.0,
        serve_days=6.0,
        shock_day=4.0,
        retrain_days=(1.0,),
    )
    return stresstest.StressSettings(**{**base, **kw})


def by_day_frame(curves: dict[tuple[str, float], np.ndarray], agent="a", seed=0, active=10) -> pd.DataFrame:
    """The harness's per-day rows of one agent and seed: {(family, magnitude): watch per active user [days]}."""
    return pd.concat(
        [
            pd.DataFrame(
                dict(agent=agent, seed=seed, family=f, magnitude=m, day=np.arange(len(w)), active_users=active)
            ).assign(watch_per_active_user=w)
            for (f, m), w in curves.items()
        ],
        ignore_index=True,
    )


def test_relative_watch_is_binned_by_week_since_training():
    # 30 days, trained on [0, 10): the drifted curve loses 1% of the calm one per day from day 10 on.
    days = np.arange(30)
    calm = 20.0 + 5.0 * np.sin(days)  # any calm curve: the ratio removes it
    drifted = calm * np.where(days < 10, 1.0, 1.0 - 0.01 * (days - 10))
    frames = [by_day_frame({("none", 0.0): calm, ("cognitive", 2.0): drifted}, seed=s, active=10) for s in (0, 1)]
    frames[1].loc[(frames[1].family == "cognitive"), "watch_per_active_user"] *= 0.9  # seed 1: 10% lower
    rel = sa.relative_by_day(pd.concat(frames, ignore_index=True), train_days=10, n_users=20)
    assert (rel[rel.day < 10].week == -1).all() and rel[rel.day == 17].week.unique().tolist() == [1]
    weekly = sa.weekly_degradation(rel)
    assert set(weekly.family) == {"cognitive"}  # the no-drift rows are the baseline, not a row
    w = weekly.set_index("week")
    # Week k holds days since training 7k..7k+6: seed 0's mean is 1 - 0.01 (7k + 3), seed 1's 0.9 x that.
    expected = [(1.0 - 0.01 * (7 * k + 3)) * 0.95 for k in (0, 1)] + [(1.0 - 0.01 * 16.5) * 0.95]  # week 2: days 14-19
    np.testing.assert_allclose(w.relative, expected)
    assert w.days_from.tolist() == [0, 7, 14] and w.days_to.tolist() == [6, 13, 19]
    assert (w.seeds == 2).all() and (w.relative_lo < w.relative).all() and (w.relative < w.relative_hi).all()
    # Days with fewer than MIN_ACTIVE_SHARE of the users active say nothing.
    thin = sa.relative_by_day(by_day_frame({("none", 0.0): calm}, active=1), train_days=10, n_users=20)
    assert thin.relative.isna().all()
    with pytest.raises(ValueError, match="no no-drift evaluation"):
        sa.relative_by_day(by_day_frame({("shock", 1.0): calm}), train_days=10, n_users=20)


def test_recovery_in_days_after_a_dated_shock():
    # Relative watch 1 until day 20, 0.5 on it, then back up 0.05 a day: 90% again on day 28 (8 days).
    calm = np.full(40, 10.0)
    frame = by_day_frame({("none", 0.0): calm, ("shock", 1.0): calm * v_curve(shock=20, n=40)}, active=10)
    rel = sa.relative_by_day(frame, train_days=10, n_users=10)
    shocked = rel[rel.family == "shock"]
    m = sa.dated_recovery_metrics(shocked, None, shock_day=20.0, n_users=10)
    # 3-day trailing mean: (0.85 + 0.9 + 0.95) / 3 = 0.9 on day 29, 9 days after the shock.
    assert m["recovery_days"] == 9
    assert m["recovery_days_95"] == 10  # (0.9 + 0.95 + 1) / 3 on day 30
    assert m["dip"] == 0.5
    # Minutes per user from day 20 on: 10 x the curve's sum, every user active every day.
    np.testing.assert_allclose(m["post_shock_return"], 10.0 * v_curve(shock=20, n=40)[20:].sum())
    assert np.isnan(m["post_shock_regret"])
    ref = frame[frame.family == "none"].assign(watch_per_active_user=12.0)
    np.testing.assert_allclose(
        m["post_shock_return"] + sa.dated_recovery_metrics(shocked, ref, 20.0, 10)["post_shock_regret"], 20 * 12.0
    )
    # A shock within a day counts from that day; no recovery within the lives: NaN.
    flat = by_day_frame({("none", 0.0): calm, ("shock", 1.0): calm * v_curve(shock=20, climb=0.0, n=40)})
    rel = sa.relative_by_day(flat, train_days=10, n_users=10)
    assert np.isnan(sa.dated_recovery_metrics(rel[rel.family == "shock"], None, 20.5, 10)["recovery_days"])


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(shock_day=6.0), r"shock_day must lie in the serving window \(2, 6\)"),
        (dict(shock_day=2.0), r"shock_day must lie in the serving window"),
        (dict(serve_days=2.0, shock_day=None), "serve_days must exceed train_days"),
        (dict(retrain_days=(0.0,)), "retrain_days"),
        (dict(agents=("bandit-retrain-7d",)), "only sasrec and gru4rec retrain"),
        (dict(algo={"sasrec": {"train_days": 3}}), "algo.sasrec.train_days: the stress test sets it"),
        (
            dict(train_scenario="stationary", scenario_overrides=TINY, shock_day=None, serve_days=None),
            "train_days is for training scenarios with a calendar",
        ),
        (
            dict(
                train_scenario="stationary",
                scenario_overrides=TINY,
                train_days=None,
                serve_days=None,
                shock_day=None,
                retrain_days=None,
                agents=("sasrec-retrain-7d",),
            ),
            "refits every 7 days: for training scenarios with a calendar",
        ),
    ],
)
def test_bad_temporal_settings_are_clear_errors(kw, message):
    with pytest.raises(ValueError, match=message):
        tiny_temporal(**kw)


def test_temporal_settings_resolve_defaults_variants_and_regimes():
    s = stresstest.StressSettings(train_scenario="lifetime", agents=("sasrec", "sasrec-retrain", "bandit"))
    assert (s.train_days, s.serve_days, s.shock_day, s.retrain_days) == (30.0, 90.0, 45.0, (7.0, 1.0))
    assert s.agents == ("sasrec", "sasrec-retrain-7d", "sasrec-retrain-1d", "bandit")
    assert s.reference == "oracle-lifetime" and stresstest.StressSettings().reference == "oracle-lookahead"
    assert s.train_config().world.lifetime.horizon_days == 30 and s.serve_config().world.lifetime.horizon_days == 90
    assert s.agent_algo("sasrec") == {"train_days": 30.0} and s.agent_algo("bandit") == {}
    t = tiny_temporal()
    regimes = {(f, m): cfg for f, m, cfg in t.regimes()}
    # Magnitude 1 of a preset family is the preset itself, and shock 0 adds nothing: the no-drift run stands in.
    assert set(t.stand_ins()) == {("shock", 0.0), ("cognitive", 1.0)}
    assert set(regimes) == {("none", 0.0), ("shock", 1.0), ("shock", 2.0), ("cognitive", 0.0), ("cognitive", 2.0)}
    calm, shocked = regimes["none", 0.0].world.shock.events, regimes["shock", 2.0].world.shock.events
    assert shocked[: len(calm)] == calm  # the preset's own events, then the dated one
    assert (shocked[-1].kind, shocked[-1].day, shocked[-1].fraction, shocked[-1].strength) == ("sudden", 4.0, 1.0, 1.0)
    assert regimes["shock", 1.0].world.shock.events[-1].strength == pytest.approx(0.8)
    # settings.json round trip: the resolved settings construct the same settings again.
    assert stresstest.StressSettings(**{**t.__dict__}) == t


def test_temporal_cli_trains_ppo_with_the_lifetime_run_defaults():
    """On a calendar the CLI gives trained agents run.py's lifetime budget and settings (a session
    budget of 250,000 steps would take hours on lives); flags and the config file still win."""
    from agents.registry import get_agent
    from experiments.core.settings import LIFETIME_RUN_DEFAULTS

    parse = lambda *argv: stress_flags.settings_from_args(
        stress_flags.build_parser().parse_args(["--train-scenario", "lifetime", *argv])
    )  # noqa: E731
    s = parse("--agents", "ppo", "sasrec")
    assert s.steps == LIFETIME_RUN_DEFAULTS["steps"] and s.algo["ppo"] == get_agent("ppo").lifetime.algo
    assert parse("--agents", "ppo", "--steps", "4096").steps == 4096
    assert "ppo" not in parse("--agents", "sasrec").algo  # not stressed, so no settings for it
    assert stress_settings("--agents", "ppo").steps == 250_000  # sessions


def test_temporal_flags_on_a_session_preset_exit_2(cli, tmp_path, capsys):
    assert cli("stress", ["--train-days", "10", "--out", str(tmp_path / "a")]) == 2
    assert "train_days is for training scenarios with a calendar" in capsys.readouterr().err
    argv = ["--train-scenario", "lifetime", "--serve-days", "20", "--train-days", "30", "--out", str(tmp_path / "b")]
    assert cli("stress", argv) == 2
    assert "serve_days must exceed train_days" in capsys.readouterr().err
    assert cli("stress", ["--train-scenario", "lifetime", "--shock-step", "3", "--out", str(tmp_path / "c")]) == 2
    assert "--shock-step is for session scenarios" in capsys.readouterr().err


@pytest.fixture(scope="module")
def tiny_temporal_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("temporal")
    settings = tiny_temporal()
    return settings, stresstest.stress(settings, out), out


def test_tiny_temporal_grid_writes_weekly_tables_recovery_and_plots(tiny_temporal_run):
    settings, res, out = tiny_temporal_run
    for name in ("report.md", "robustness.csv", "grid.csv", "by_day.csv", "degradation_by_week.csv", "recovery.csv"):
        assert (out / name).stat().st_size > 0, name
    for name in ("robustness.png", "degradation_by_day.png", "recovery.png"):
        assert is_png(out / name), name
    assert not (out / "timelines.csv").exists()
    report = (out / "report.md").read_text()
    for section in (
        "## Degradation against days since training",
        "## Recovery after the dated shock",
        "](degradation_by_day.png)",
        "| sasrec-retrain-1d | every 1 d |",
        "Settings given",
    ):
        assert section in report, section
    agents = {"bandit", "sasrec", "sasrec-retrain-1d", "oracle-lifetime"}
    assert set(res.grid.agent) == agents and set(res.recovery.agent) == agents
    weekly = pd.read_csv(out / "degradation_by_week.csv")
    assert set(weekly.week) == {0} and weekly.days_to.max() == 3  # days 2..5 are days 0..3 since training
    assert {(f, m) for f, m in zip(weekly.family, weekly.magnitude)} == {
        ("shock", 0.0),
        ("shock", 1.0),
        ("shock", 2.0),
        ("cognitive", 0.0),
        ("cognitive", 1.0),
        ("cognitive", 2.0),
    }
    table = pd.read_csv(out / "robustness.csv")
    assert (table[(table.family == "cognitive") & (table.magnitude == 1)].relative_return == 1).all()
    assert list((out / "tb").rglob("events.out.tfevents.*"))
    # The refitting variant refits from day 3 on: from the same fit, different numbers.
    g = res.grid.set_index(["agent", "seed", "family", "magnitude"]).return_mean
    assert not np.allclose(g["sasrec"].to_numpy(), g["sasrec-retrain-1d"].to_numpy())


def test_tiny_temporal_shock_acts_only_from_its_day(tiny_temporal_run):
    """Common random numbers: a life with the dated shock is the calm life until the shock day."""
    settings, res, _ = tiny_temporal_run
    shocked = res.by_day[(res.by_day.family == "shock") & (res.by_day.magnitude == 2.0)]
    before, after = shocked[shocked.day < settings.shock_day], shocked[shocked.day >= settings.shock_day]
    np.testing.assert_array_equal(before.watch, before.watch_no_drift)
    assert (after.watch != after.watch_no_drift).any()
    # Cognitive drift acts on every gap between visits: it changes lives from the first one.
    cognitive = res.by_day[(res.by_day.family == "cognitive") & (res.by_day.magnitude == 2.0)]
    assert (cognitive.watch != cognitive.watch_no_drift).any()


def test_temporal_report_only_redoes_the_outputs(cli, tiny_temporal_run):
    _, _, out = tiny_temporal_run
    before = pd.read_csv(out / "degradation_by_week.csv")
    (out / "report.md").unlink()
    assert cli("stress", ["--report-only", str(out)]) == 0
    assert "## Recovery after the dated shock" in (out / "report.md").read_text()
    pd.testing.assert_frame_equal(pd.read_csv(out / "degradation_by_week.csv"), before)


def test_day_cadence_variants_parse_and_match_the_supervised_names():
    from agents.registry import days_variant, get_agent, parse_variant, retrain_days, variant_base
    from agents.supervised import SupervisedParams

    name = "sasrec" + SupervisedParams(retrain_every_days=7).name_suffix
    assert name == days_variant("sasrec", 7.0) == "sasrec-retrain-7d"
    assert parse_variant(name) == (get_agent("sasrec"), True) and retrain_days(name) == 7.0
    assert retrain_days("gru4rec-retrain-0.5d") == 0.5 and variant_base("gru4rec-retrain-0.5d") == "gru4rec"
    assert retrain_days("sasrec-retrain") is None and variant_base("sasrec-retrain") == "sasrec"
    with pytest.raises(ValueError, match="must be > 0"):
        parse_variant("sasrec-retrain-0d")
    with pytest.raises(ValueError, match="unknown agent 'sasrec-retrain-xd'"):
        parse_variant("sasrec-retrain-xd")
