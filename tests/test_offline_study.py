"""The offline-evaluation study (experiments.studies.offline.study) and its CLI (experiments/offline.py), tiny."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from agents.oracles import MyopicOracle
from experiments.core.settings import SMOKE_MODEL
from experiments.studies.offline import study as oe

TINY = {"catalog": {"n_items": 120}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 20}}
SMALL = dict(
    scenario="mixed",
    scenario_overrides=TINY,
    seeds=(0,),
    eval_users=16,
    log_users=8,
    log_steps=40,
    cutoffs=(2, 5),
    model=SMOKE_MODEL,
    algo={
        "sasrec": {"epochs": 1, "batch_size": 128},
        "item-score": {"candidates": 1, "refinements": 0, "tune_users": 8},
    },
)


@pytest.fixture(scope="module")
def study():
    settings = oe.OfflineSettings(**SMALL, agents=("random", "popularity", "bandit", "sasrec", "oracle-myopic"))
    return settings, oe.run_study(settings, progress=lambda line: None)


def test_the_logging_policy_as_target_is_estimated_exactly(study):
    """Control: IPS of the logging policy on its own logs is its true return on the same users."""
    _, result = study
    row = result.ope[(result.ope.agent == oe.LOGGING) & (result.ope.estimator == "ips")].iloc[0]
    assert row.estimate == pytest.approx(row.truth, rel=1e-6)
    assert set(result.ope.estimator) == set(("ips", "snips", "dm", "dr"))


def test_every_scoring_agent_has_ranking_metrics_and_oracles_are_labelled(study):
    settings, result = study
    ranked = set(result.ranking.agent)
    assert ranked == {"random", "popularity", "bandit", "sasrec"}
    assert "true user state" in result.notes["oracle-myopic"]
    assert "oracle-myopic" in set(result.online.agent) and "oracle-myopic" not in set(result.ope.agent)
    metrics = set(result.ranking[result.ranking.segment == "all"].metric)
    assert {
        "precision@2",
        "recall@5",
        "ndcg@5",
        "hit_rate@2",
        "mrr",
        "coverage@5",
        "novelty@2",
        "diversity@5",
    } <= metrics
    # Cold-start steps exist (new users) and are scored apart from the warm ones.
    assert {"cold", "warm"} <= set(result.ranking.segment)
    values = result.ranking.value.dropna()
    assert ((values >= 0) & (values <= 1) | result.ranking.metric.str.startswith("novelty")[values.index]).all()


def test_tables_and_report(study, tmp_path):
    settings, result = study
    table = oe.agent_table(result)
    assert table["true return"].is_monotonic_decreasing
    taus = oe.kendall_table(table)
    assert taus.loc["ndcg@5", "agents"] == 4 and -1 <= taus.loc["ndcg@5", "kendall tau"] <= 1
    assert taus.loc["IPS return", "agents"] == 4  # random, popularity, bandit, sasrec (not the logging policy)
    errors = oe.ope_error_table(result)
    assert errors.loc[(oe.LOGGING, "IPS"), "bias"] == pytest.approx(0.0, abs=1e-6)
    report = oe.write_report(settings, result, tmp_path, "python experiments/offline.py --test", 1.0)
    text = report.read_text()
    assert "Kendall" not in text or "kendall tau" in text
    for name in ("agents.csv", "kendall.csv", "ope_errors.csv", "offline_vs_online.png", "ope_vs_truth.png"):
        assert (tmp_path / name).is_file(), name


def test_zero_support_is_a_labelled_nan():
    """Treatment: epsilon 0 logs only the popular candidate; a target that differs has no support."""
    settings = oe.OfflineSettings(**{**SMALL, "epsilon": 0.0}, agents=("random", "popularity"))
    result = oe.run_study(settings, progress=lambda line: None)
    ips = result.ope[result.ope.estimator == "ips"].set_index("agent")
    assert math.isnan(ips.loc["random", "estimate"]) and "zero support" in ips.loc["random", "reason"]
    assert np.isfinite(ips.loc[oe.LOGGING, "estimate"])
    dm = result.ope[result.ope.estimator == "dm"]
    assert dm.estimate.notna().all()  # DM still answers, from its model alone


def test_same_seed_same_numbers():
    settings = oe.OfflineSettings(**SMALL, agents=("random", "bandit"))
    a, b = (oe.run_study(settings, progress=lambda line: None) for _ in range(2))
    pd.testing.assert_frame_equal(a.ope, b.ope)
    pd.testing.assert_frame_equal(a.ranking, b.ranking)


def test_ranking_a_policy_without_scores_is_an_error(study):
    settings, _ = study
    with pytest.raises(ValueError, match="oracle-myopic has no scores"):
        oe.ranking_rows("oracle-myopic", MyopicOracle(), {}, settings, np.zeros((1, 1)), np.zeros(1))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(agents=("nope",)), "unknown agent 'nope'"),
        (dict(agents=("ppo",)), "pass a trained run"),
        (dict(cutoffs=(0,)), "cutoff K must be an integer >= 1"),
        (dict(scenario="nowhere"), "unknown scenario"),
        (dict(seeds=()), "distinct seeds"),
        (dict(epsilon=1.5), "epsilon"),
        (dict(ppo_run="/nonexistent/run"), "no run directory"),
    ],
)
def test_bad_settings_are_one_line_errors(change, match):
    with pytest.raises(ValueError, match=match) as err:
        oe.OfflineSettings(**{**SMALL, **change})
    assert "\n" not in str(err.value)


def test_cli_errors_and_minari_export(cli, tmp_path, capsys):
    assert cli("offline", ["--k", "0", "--out", str(tmp_path / "x")]) == 2
    assert "cutoff K must be an integer >= 1" in capsys.readouterr().err
    assert cli("offline", ["--export-minari", str(tmp_path), "--logs", str(tmp_path / "missing.parquet")]) == 2
    assert "log file not found" in capsys.readouterr().err
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    assert cli("offline", ["--export-minari", str(tmp_path), "--logs", str(tmp_path / "broken.parquet")]) == 2
    err = capsys.readouterr().err
    assert "not readable Parquet" in err and err.count("\n") == 1
    minari = pytest.importorskip("minari")
    assert cli("offline", ["--smoke", "--log-users", "4", "--log-steps", "10", "--export-minari", str(tmp_path)]) == 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MINARI_DATASETS_PATH", str(tmp_path))
        dataset = minari.load_dataset("driftrec/mixed/logs-v0")
    logs = pd.read_parquet(tmp_path / "mixed-logs.parquet")
    assert dataset.total_steps == int((logs.step >= 0).sum())


def test_logs_from_before_the_drift():
    """Control: logs and truth in one world, the logging policy's IPS is its return. Treatment: logs
    from `stationary`, truth under `shock` (tastes jump mid-session): the estimate misses the drift."""
    control = oe.OfflineSettings(**{**SMALL, "scenario": "shock"}, agents=("random",))
    treated = control.replace(logs_scenario="stationary")
    rows = []
    for settings in (control, treated):
        ope = oe.run_study(settings, progress=lambda line: None).ope
        rows.append(ope[(ope.agent == oe.LOGGING) & (ope.estimator == "ips")].iloc[0])
    assert rows[0].estimate == pytest.approx(rows[0].truth, rel=1e-6)
    assert rows[1].truth == pytest.approx(rows[0].truth)  # the same users, the same truth
    assert abs(rows[1].estimate - rows[1].truth) > 1e-3
    with pytest.raises(ValueError, match="different catalogs"):
        oe.OfflineSettings(**{**SMALL, "scenario": "mixed", "logs_scenario": "stationary"})


def test_ppo_greedy_policy_scores_agree_with_its_actions():
    from agents.model import ActorCritic, GreedyPolicy, encoder_config
    from envs import RecVectorEnv, make_scenario

    env = RecVectorEnv(num_envs=5, scenario=make_scenario("stationary", TINY), seed=0)
    obs, _ = env.reset(seed=0)
    torch.manual_seed(0)
    model = ActorCritic(
        encoder_config(env.single_observation_space, env.core.n_items, SMOKE_MODEL), 1, env.core.item_features
    )
    policy = GreedyPolicy(model, "ppo")
    scores = policy.scores(obs)
    assert scores.shape == (5, TINY["env"]["num_candidates"])
    np.testing.assert_array_equal(scores.argmax(axis=1), policy.act(obs))
