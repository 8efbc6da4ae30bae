"""The user matters: personal value, user-blind baselines, the stale-state oracle and the validity report
on tiny configs (the full report is a benchmark: experiments/validity.py)."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents.item_score import QUALITY, FeatureModelPolicy, ItemScoreParams, ItemScorePolicy, tune_item_score
from agents.oracles import CommunityOracle, SessionOracle, StaleStateOracle
from agents.registry import get_agent
from envs import RecVectorEnv
from experiments.core.commands import REPO_ROOT
from experiments.core.harness import evaluate
from experiments.core.rundirs import write_status
from experiments.core.settings import RunSettings
from experiments.studies.validity import gates
from simulator import response
from simulator.response import ResponseParams

USERS = 256


def test_an_item_is_worth_more_to_the_users_it_suits():
    p = ResponseParams()
    quality = np.full(3, 0.8, dtype=np.float32)
    value = response.personal_value(np.array([0.6, 0.0, -0.6], dtype=np.float32), quality, p)
    assert value[0] > 0.7 and value[2] < 0.1 and np.all(np.diff(value) < 0)
    # Quality matters through the fit: a great item that does not suit is worth less than a fair one that does.
    great_unsuited = response.personal_value(np.float32(-0.4), np.float32(0.95), p)
    fair_suited = response.personal_value(np.float32(0.4), np.float32(0.4), p)
    assert fair_suited > great_unsuited
    # Value decides completion, experience and the budget refund.
    attract = np.full(3, 0.5, dtype=np.float32)
    assert np.all(np.diff(response.completion(value, attract, p)) < 0)
    assert np.all(np.diff(response.experience(np.ones(3, bool), value, attract, p)) <= 0)
    assert np.all(np.diff(response.budget_cost(np.full(3, 4.0, np.float32), value, p)) > 0)


def test_two_communities_value_the_same_item_differently(make_world):
    w = make_world("stationary", n_users=400, seed=0)
    items = np.arange(w.catalog.n_initial)[None, :].repeat(w.n_users, 0)
    value = w.slate_value(items)  # [users, items]
    by_community = np.stack([value[w.state.community == c].mean(0) for c in range(w.config.users.n_communities)])
    # For most items the best-served community values them far above the worst-served one.
    spread = by_community.max(0) - by_community.min(0)
    assert np.median(spread) > 0.2


def test_item_features_are_noisy_aggregates_not_the_truth(make_world):
    w = make_world("stationary", n_users=2, seed=0)
    cat, t = w.catalog, w.catalog.n_topics
    rating, attract = cat.features[:, t], cat.features[:, t + 1]
    assert not np.allclose(rating, cat.quality, atol=0.05)
    assert 0.2 < np.corrcoef(rating, cat.quality)[0, 1] < 0.95  # informative, not revealing
    assert not np.allclose(attract, cat.attractiveness, atol=0.05)


TINY_VALIDITY = {"catalog": {"n_items": 200}, "env": {"num_candidates": 10, "history_len": 8, "max_steps": 40}}


@pytest.fixture(scope="module")
def tiny_cfgs(request):
    from envs import make_scenario

    return {name: make_scenario(name, TINY_VALIDITY) for name in ("stationary", "shock")}


def test_a_personalised_oracle_beats_every_user_blind_policy_by_a_clear_margin(tiny_cfgs):
    cfg = tiny_cfgs["stationary"]
    t = cfg.world.catalog.n_topics
    tuned, _ = tune_item_score(cfg, ItemScoreParams(candidates=6, refinements=4, tune_users=64), seed=99)
    blind = [ItemScorePolicy.max_feature(t, QUALITY, "max-rating"), FeatureModelPolicy(), tuned]
    best_blind = max(evaluate(p, cfg, USERS, 1).metrics["return_mean"] for p in blind)
    oracle = evaluate(SessionOracle(), cfg, USERS, 1).metrics["return_mean"]
    assert best_blind < 0.75 * oracle, (best_blind, oracle)


def test_the_stale_state_oracle_ties_without_drift_and_loses_under_it(tiny_cfgs):
    calm = [evaluate(p, tiny_cfgs["stationary"], USERS, 2).episodes for p in (SessionOracle(), StaleStateOracle())]
    pd.testing.assert_frame_equal(calm[0], calm[1])  # nothing drifts: the same choices, the same users
    true, stale = (
        evaluate(p, tiny_cfgs["shock"], USERS, 2).metrics["return_mean"] for p in (SessionOracle(), StaleStateOracle())
    )
    assert stale < 0.92 * true, (stale, true)


def test_the_community_oracle_ties_when_users_are_their_community_and_loses_when_they_are_not():
    from envs import make_scenario

    def both(strength):
        cfg = make_scenario("stationary", {**TINY_VALIDITY, "users": {"community_strength": strength}})
        return [evaluate(p, cfg, USERS, 2) for p in (SessionOracle(), CommunityOracle())]

    true, community = both(1.0)  # a user's tastes are their community's: nothing more to learn
    pd.testing.assert_frame_equal(true.episodes, community.episodes)
    true, community = both(0.3)  # mostly their own tastes: knowing the community is not enough
    assert community.metrics["return_mean"] < 0.9 * true.metrics["return_mean"], (community.metrics, true.metrics)


def test_state_of_community_replaces_tastes_only(make_world):
    w = make_world("mixed", n_users=6, seed=0)
    for _ in range(5):
        w.step(np.zeros((6, 1), dtype=np.int64))
    s = w.state_of_community()
    strength = np.float32(w.config.users.community_strength)
    np.testing.assert_array_equal(s.interest, strength * w.centres[w.state.community])
    np.testing.assert_array_equal(
        s.drift["cognitive"].satiation, w.state.drift["cognitive"].satiation
    )  # not a taste: stays current
    np.testing.assert_array_equal(s.satisfaction, w.state.satisfaction)


def test_the_community_oracle_refuses_real_users():
    from envs import make_scenario

    cfg = make_scenario("stationary", {"users": {"real_history": True}})
    with pytest.raises(ValueError, match="oracle-community needs simulated users"):
        get_agent("oracle-community").build(cfg)


def test_state_at_start_undoes_drift_only(make_world):
    w = make_world("mixed", n_users=6, seed=0)
    for _ in range(15):
        w.step(np.zeros((6, 1), dtype=np.int64))
    start = w.state_at_start()
    np.testing.assert_array_equal(start.interest, w.state.initial_interest)
    assert not start.drift["cognitive"].satiation.any()
    np.testing.assert_array_equal(start.calendar_offset + start.step, w.state.calendar_offset)
    np.testing.assert_array_equal(start.satisfaction, w.state.satisfaction)  # not a taste: stays current
    assert not np.array_equal(w.state.interest, w.state.initial_interest)  # the world itself is untouched


def test_item_score_is_a_named_baseline_that_reads_item_features_only(tiny_cfgs):
    cfg = tiny_cfgs["stationary"]
    policy = get_agent("item-score").build(cfg, {"candidates": 2, "refinements": 1, "tune_users": 16}, seed=0)
    env = RecVectorEnv(4, cfg, seed=0)
    policy.bind(env)
    obs, _ = env.reset(seed=0)
    blanked = {k: (v if k == "candidate_features" else np.zeros_like(v)) for k, v in obs.items()}
    np.testing.assert_array_equal(policy.act(obs), policy.act(blanked))  # nothing but the item features


UPDATE = ["--smoke", "--history-agents", "--presets"]  # the updates: no history ablation (the report's is kept)


@pytest.fixture(scope="module")
def stationary_and_shock_report(cli, tmp_path_factory):
    """(folder, exit status, what it printed) of a smoke validity report of stationary and shock with the
    history ablation of sasrec on cognitive, measured once: the end-to-end test reads it, the update
    tests copy it."""
    out = tmp_path_factory.mktemp("validity") / "report"
    argv = ["--smoke", "--presets", "stationary", "shock", "--history-agents", "sasrec"]
    argv += ["--history-presets", "cognitive", "--history-seeds", "0", "--out", str(out)]
    with contextlib.redirect_stdout(io.StringIO()) as printed:
        code = cli("validity", argv)
    return out, code, printed.getvalue()


def test_validity_report_end_to_end_at_smoke_sizes(stationary_and_shock_report):
    out, code, printed = stationary_and_shock_report
    assert code in (0, 1)  # 1: a gate fails at toy sizes, which the report must say, not hide
    gates_table = pd.read_csv(out / "gates.csv")
    names = set(gates_table.name)
    assert {
        "personalisation",
        "soundness",
        "long-term value",
        "history",
        "drift: no drift, no shortfall",
        "drift: shortfall grows with magnitude",
        "drift: stale-state falls short",
    } <= names
    assert set(pd.read_csv(out / "history.csv").preset) == {"cognitive"}
    report = (out / "report.md").read_text()
    assert "## Gates" in report and "oracle-stale" in report and "item-score" in report
    assert ("FAIL" in printed) == (code == 1)


def test_validity_report_writes_its_command_relative_to_the_repository(stationary_and_shock_report):
    # The fixture gave --out as an absolute path (a temporary folder): the report, committed under docs/ when it
    # is measured for real, names it relative to the repository, where the CLIs run.
    out = stationary_and_shock_report[0]
    assert out.is_absolute()
    command = pd.read_csv(out / "commands.csv").command.iloc[-1]
    assert command.startswith("python experiments/validity.py --smoke --presets stationary shock")
    assert command.endswith(f"--out {Path(os.path.relpath(out, REPO_ROOT)).as_posix()}")
    assert not [word for word in command.split() if os.path.isabs(word)]
    assert f"`{command}`" in (out / "report.md").read_text()


def test_validity_settings_fail_before_any_work():
    with pytest.raises(ValueError, match="unknown scenario 'nope'"):
        gates.ValiditySettings(presets=("nope",))
    with pytest.raises(ValueError, match="distinct seeds"):
        gates.ValiditySettings(seeds=(0, 0))
    with pytest.raises(ValueError, match="algo.top"):
        gates.ValiditySettings(algo={"oracle-lookahead": {"top": 0}})


def test_validity_refuses_a_history_run_that_has_not_finished(tmp_path):
    run_dir = tmp_path / "0-20260101-000000"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(RunSettings(agent="ppo", scenario="mixed").to_dict()))
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps({"env_steps": 4096}))
    write_status(run_dir, "running")  # still training (or killed): its checkpoint is a half-trained policy
    with pytest.raises(ValueError, match=f"--history-runs {run_dir / 'status.json'} says running"):
        gates.ValiditySettings(history_runs=(str(run_dir),))
    with pytest.raises(ValueError, match="no run directory"):
        gates.ValiditySettings(history_runs=(str(tmp_path / "missing"),))


def test_validity_report_covers_lifetimes_with_their_own_reference(cli, tmp_path):
    out = tmp_path / "report"
    code = cli("validity", ["--smoke", "--presets", "mixed", "lifetime", "--history-agents", "--out", str(out)])
    assert code in (0, 1)
    table = pd.read_csv(out / "gates.csv")
    lifetime = table[table["where"] == "lifetime"]
    assert {"personalisation", "soundness", "long-term value", "drift: days bite harder than a session"} <= set(
        lifetime.name
    )
    assert "min +25%" in lifetime[lifetime.name == "long-term value"].figures.iloc[0]  # the lifetime floor
    policies = pd.read_csv(out / "policies.csv")
    assert "oracle-lifetime" in set(policies[policies.preset == "lifetime"].policy)
    assert "oracle-lookahead" not in set(policies[policies.preset == "lifetime"].policy)
    assert {"sessions_mean", "churn_rate"} <= set(policies.columns)


def test_validity_update_replaces_the_remeasured_presets_and_keeps_the_rest(cli, stationary_and_shock_report, tmp_path):
    out = Path(shutil.copytree(stationary_and_shock_report[0], tmp_path / "report"))
    base = UPDATE
    before = pd.read_csv(out / "policies.csv")
    earlier = pd.read_csv(out / "commands.csv")  # as a report measured before commands were made relative
    earlier.loc[0, "command"] = f"python experiments/validity.py --out {REPO_ROOT / 'docs' / 'validity'}"
    earlier.to_csv(out / "commands.csv", index=False)
    # Re-measure one preset: its rows are replaced (reproduced: same seeds), the other preset's are kept.
    assert cli("validity", [*base, "shock", "--update", str(out)]) in (0, 1)
    after = pd.read_csv(out / "policies.csv")
    assert len(after) == len(before)
    pd.testing.assert_frame_equal(
        before[before.preset == "stationary"].reset_index(drop=True),
        after[after.preset == "stationary"].reset_index(drop=True),
    )
    pd.testing.assert_frame_equal(  # same settings, same seeds: the re-measured rows reproduce
        before[before.preset == "shock"].reset_index(drop=True), after[after.preset == "shock"].reset_index(drop=True)
    )
    assert set(pd.read_csv(out / "gates.csv")["where"]) >= {"stationary", "shock"}
    commands = pd.read_csv(out / "commands.csv")
    assert list(commands.presets) == ["stationary shock (history: sasrec on cognitive)", "shock"]
    assert commands.command[0] == "python experiments/validity.py --out docs/validity"  # the earlier one too
    assert "--update" in (out / "report.md").read_text()


def test_two_updates_of_one_report_running_side_by_side_keep_each_others_rows(
    cli, stationary_and_shock_report, tmp_path, monkeypatch
):
    """An update that finishes while another is measuring: the later one merges into the report as
    it is when it finishes, not as it was when it started."""
    out = Path(shutil.copytree(stationary_and_shock_report[0], tmp_path / "report"))
    base = UPDATE
    measure_drift = gates.measure_drift

    def drift_while_another_update_lands(settings):
        other = pd.read_csv(out / "policies.csv")
        other.loc[other.preset == "stationary", "return_mean"] = 123.0  # the other update's new rows
        other.to_csv(out / "policies.csv", index=False)
        return measure_drift(settings)

    monkeypatch.setattr(gates, "measure_drift", drift_while_another_update_lands)
    assert cli("validity", [*base, "shock", "--update", str(out)]) in (0, 1)
    after = pd.read_csv(out / "policies.csv")
    assert (after[after.preset == "stationary"].return_mean == 123.0).all()
    assert (after[after.preset == "shock"].return_mean != 123.0).all()


def test_validity_update_refuses_a_foreign_directory_before_any_work(cli, tmp_path, capsys):
    assert cli("validity", ["--smoke", "--presets", "shock", "--update", str(tmp_path)]) == 2
    assert "no policies.csv there" in capsys.readouterr().err
    (tmp_path / "policies.csv").write_text("preset,seed,policy,return_mean\nshock,7,random,1.0\n")
    (tmp_path / "drift.csv").write_text("")
    (tmp_path / "history.csv").write_text("")
    assert cli("validity", ["--smoke", "--presets", "shock", "--update", str(tmp_path)]) == 2
    assert "measured on seeds [7]" in capsys.readouterr().err


def test_validity_refuses_a_history_run_trained_on_other_dynamics(tmp_path):
    settings = RunSettings(
        agent="ppo", scenario="mixed", steps=4096, scenario_overrides={"users": {"n_communities": 16}}
    )
    run_dir = tmp_path / "0-20260101-000000"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(settings.to_dict()))
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps({"env_steps": 4096}))
    # A whole, finished run (the loader refuses anything less before this check is reached).
    (run_dir / "results.csv").write_text(
        "agent,scenario,seed,phase,env_steps,return_mean\nppo,mixed,0,final,4096,1.0\nrandom,mixed,0,baseline,4096,0.5\n"
    )
    write_status(run_dir, "finished", env_steps=4096, return_mean=1.0)
    with pytest.raises(
        ValueError, match=r"trained on another 'mixed' than this report measures \(differs in: world.users\)"
    ):
        gates.ValiditySettings(history_runs=(str(run_dir),))
