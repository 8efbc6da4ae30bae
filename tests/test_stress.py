"""Drift stress tests: the analysis on synthetic curves, settings errors, and a tiny grid end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from experiments import stress, stresstest
from experiments.stresstest import analysis as sa
from experiments.stresstest.plots import is_png

TINY = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 20}}
TINY_ALGO = {"sasrec": {"log_users": 16, "log_steps": 30, "epochs": 1}}
TINY_MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1}


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


def test_negative_magnitude_and_missing_checkpoint_exit_2_naming_the_problem(tmp_path, capsys):
    assert stress.main(["--magnitudes", "0", "-1", "--out", str(tmp_path / "a")]) == 2
    assert "stress.magnitude" in capsys.readouterr().err
    missing = tmp_path / "no-such-run"
    assert stress.main(["--load", str(missing), "--out", str(tmp_path / "b")]) == 2
    assert str(missing) in capsys.readouterr().err
    assert stress.main(["--families", "weather", "--out", str(tmp_path / "c")]) == 2
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
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("stress")
    settings = tiny_settings(agents=("bandit", "sasrec", "sasrec-retrain"), retrain_every=3)
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


def test_report_only_redoes_the_outputs_from_the_saved_evaluations(tiny_run, tmp_path, capsys):
    _, _, out = tiny_run
    before = pd.read_csv(out / "robustness.csv")
    (out / "report.md").unlink()
    assert stress.main(["--report-only", str(out)]) == 0
    assert (out / "report.md").is_file()
    pd.testing.assert_frame_equal(pd.read_csv(out / "robustness.csv"), before)
    assert stress.main(["--report-only", str(tmp_path)]) == 2
    assert f"no settings.json in {tmp_path}" in capsys.readouterr().err


def test_config_file_sets_the_training_regime_and_agent_settings(tmp_path):
    cfg = tmp_path / "stress.yaml"
    cfg.write_text("scenario: {catalog: {n_items: 120}}\nmodel: {d_model: 16}\nalgo: {sasrec: {epochs: 2}}\n")
    args = stress.parse_args(["--config", str(cfg), "--agents", "sasrec", "bandit", "--smoke"])
    settings = stress.settings_from_args(args)
    assert settings.train_config().world.catalog.n_items == 120
    assert settings.model["d_model"] == 16 and settings.algo["sasrec"]["epochs"] == 2
    assert settings.algo["sasrec"]["log_users"] == 16  # smoke sizes stay under the config's
    assert "ppo" not in settings.algo  # not stressed: its smoke sizes are dropped
    cfg.write_text("algo: {ppo: {lr: 0.001}}\n")
    with pytest.raises(ValueError, match="algo settings for 'ppo', which is not stressed"):
        stress.settings_from_args(stress.parse_args(["--config", str(cfg), "--agents", "bandit"]))


def test_smoke_trains_ppo_then_load_stresses_its_checkpoint(tmp_path):
    """The trainable path: --smoke trains PPO through run.py's loop, restores its checkpoint and
    stresses it; --load then stresses that checkpoint again, giving the same numbers."""
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
    assert stress.main(common + ["--agents", "ppo", "--out", str(tmp_path / "train")]) == 0
    trained = pd.read_csv(tmp_path / "train" / "grid.csv")
    run_dir = next((tmp_path / "train" / "runs").rglob("checkpoint")).parent
    assert stress.main(common + ["--load", str(run_dir), "--out", str(tmp_path / "load")]) == 0
    loaded = pd.read_csv(tmp_path / "load" / "grid.csv")
    ppo = lambda g: g[g.agent == "ppo"].return_mean.to_numpy()  # noqa: E731
    assert len(ppo(trained)) == 2
    np.testing.assert_allclose(ppo(loaded), ppo(trained))
    assert is_png(tmp_path / "load" / "recovery.png")
