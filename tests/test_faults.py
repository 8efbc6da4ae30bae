"""Faults and bad input: nothing is lost, every error is one clear line.

Runs are killed by a scheduler's signal and resumed, checkpoints are torn mid-write, files are
truncated or foreign, output locations cannot be written. Each case is a few seconds at smoke
sizes (SB3 PPO: no Ray processes).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from agents.registry import get_agent
from experiments.core.checkpoints import save_checkpoint
from experiments.core.records import load_run
from experiments.core.restore import restore_policy
from experiments.core.rundirs import run_status, write_status
from experiments.core.settings import config_label
from experiments.core.training import build_agent

ROOT = Path(__file__).resolve().parents[1]
SB3_SMOKE = ["--agent", "sb3-ppo", "--smoke", "--checkpoint-every", "1", "--eval-interval", "256"]


def _only_run(logdir: Path) -> Path:
    (path,) = [p for p in logdir.glob("*/*/*") if p.is_dir()]
    return path


@pytest.fixture(scope="module")
def sb3_run(tmp_path_factory, cli) -> Path:
    """An SB3 PPO smoke run of 1,024 steps, checkpointed and evaluated every 256, trained once for the
    tests that resume, tear or corrupt one: each works on its own copy (copy_run)."""
    logdir = tmp_path_factory.mktemp("sb3")
    assert cli("run", [*SB3_SMOKE, "--steps", "1024", "--logdir", str(logdir)]) == 0
    return _only_run(logdir)


def _train_rows(run_dir: Path) -> pd.DataFrame:
    rows = pd.read_csv(run_dir / "results.csv")
    return rows[rows.phase == "train"]


# ------------------------------------------------------------------ signals
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_a_scheduler_signal_checkpoints_and_the_resumed_run_loses_nothing(cli, tmp_path, sig):
    argv = [sys.executable, "experiments/run.py", *SB3_SMOKE, "--steps", "200000", "--logdir", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # tiny models: one torch thread, as in this process (conftest)
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:  # wait for a checkpoint and a few evaluations
            found = list(tmp_path.glob("*/*/*/checkpoint/state.json"))
            if found and (found[0].parents[1] / "results.csv").is_file() and len(_train_rows(found[0].parents[1])) >= 2:
                break
            time.sleep(0.2)
        else:
            pytest.fail("no checkpoint within 120 s")
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 128 + sig, err
    assert f"stopped by {signal.Signals(sig).name}: checkpoint saved (" in err
    assert f"continue with: python experiments/run.py --resume {_only_run(tmp_path)}" in err
    run_dir = _only_run(tmp_path)
    assert run_status(run_dir) == "interrupted"
    saved = json.loads((run_dir / "checkpoint" / "state.json").read_text())["env_steps"]
    logged = _train_rows(run_dir).env_steps.max()
    assert saved >= logged  # the stop checkpointed after the last logged evaluation: nothing lost

    assert cli("run", ["--resume", str(run_dir), "--steps", str(saved + 256)]) == 0  # one more iteration
    steps = _train_rows(run_dir).env_steps.to_numpy()
    assert (steps[1:] > steps[:-1]).all(), steps  # no duplicated or rolled-back rows
    assert run_status(run_dir) == "finished"
    assert (pd.read_csv(run_dir / "results.csv").phase == "final").sum() == 1


def test_keep_best_ends_with_the_snapshot_best_on_validation_users(cli, tmp_path, capsys):
    from experiments.core.harness import EVAL_SEED, VALIDATION_SEED, evaluate

    # Evaluations at 256, 512, ... steps: seven snapshots to choose among, on the validation users.
    assert cli("run", [*SB3_SMOKE, "--steps", "1792", "--keep-best", "--logdir", str(tmp_path)]) == 0
    run_dir = _only_run(tmp_path)
    rows = pd.read_csv(run_dir / "results.csv")
    train = rows[rows.phase == "train"]
    best = train.loc[train.return_mean.idxmax()]
    assert len(train) >= 3 and train.return_mean.nunique() > 1  # a real choice
    saved = json.loads((run_dir / "best" / "state.json").read_text())
    assert saved["env_steps"] == best.env_steps and saved["best_return"] == pytest.approx(best.return_mean)
    final = rows[rows.phase == "final"].iloc[0]
    assert final.env_steps == best.env_steps  # the final evaluation is of the best snapshot, not the last
    assert f"at {int(best.env_steps):,} env steps" in capsys.readouterr().err
    # Never pooled with runs that end on their last snapshot.
    assert config_label(json.loads((run_dir / "run.json").read_text())) != ""
    # The snapshot scores what was logged on the validation users, and the final figure on the final ones.
    settings = load_run(run_dir).settings
    agent = build_agent(settings, "cpu")
    try:
        agent.restore(run_dir / "best")
        config = settings.scenario_config()
        again = evaluate(agent.policy(), config, settings.eval_users, VALIDATION_SEED).metrics["return_mean"]
        assert again == pytest.approx(best.return_mean)
        final_users = evaluate(agent.policy(), config, settings.final_eval_users, EVAL_SEED).metrics["return_mean"]
        assert final_users == pytest.approx(final.return_mean)
    finally:
        agent.close()


def test_resume_truncates_what_was_logged_after_the_checkpoint(cli, sb3_run, copy_run, tmp_path):
    run_dir = copy_run(sb3_run, tmp_path)
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    rows = pd.read_csv(run_dir / "results.csv")
    # As after a kill -9 between an evaluation and the next checkpoint: rows past the checkpoint.
    extra = rows[rows.phase == "train"].tail(1).assign(env_steps=state["env_steps"] + 999)
    pd.concat([rows, extra]).to_csv(run_dir / "results.csv", index=False)
    assert cli("run", ["--resume", str(run_dir), "--steps", str(state["env_steps"] + 512)]) == 0
    steps = _train_rows(run_dir).env_steps.to_numpy()
    assert state["env_steps"] + 999 not in steps and (steps[1:] > steps[:-1]).all()


def test_a_checkpoint_torn_mid_write_leaves_the_previous_one_loadable(cli, sb3_run, copy_run, tmp_path, monkeypatch):
    from agents.sb3_agent import SB3PPOAgent

    run_dir = copy_run(sb3_run, tmp_path)
    ckpt = run_dir / "checkpoint"
    before = (ckpt / "state.json").read_text()

    def dies_mid_write(self, path):  # as a kill -9 halfway through writing the new checkpoint
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "half.bin").write_bytes(b"\0" * 10)
        raise KeyboardInterrupt

    settings = load_run(run_dir).settings
    agent = build_agent(settings, "cpu")
    monkeypatch.setattr(SB3PPOAgent, "save", dies_mid_write)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(agent, ckpt, {"iteration": 99, "next_eval": 0})
    agent.close()
    assert (ckpt / "state.json").read_text() == before  # untouched
    monkeypatch.undo()
    _, policy = restore_policy(run_dir)  # and it still loads
    assert policy is not None
    assert cli("run", ["--resume", str(run_dir), "--steps", "1536"]) == 0  # the torn copy is cleared
    assert not (run_dir / "checkpoint.tmp").exists()


# ------------------------------------------------------------ corrupted files
@pytest.mark.parametrize("target", ["state.json", "run.json"])
def test_truncated_run_files_are_one_line_naming_the_file(cli, sb3_run, copy_run, tmp_path, capsys, target):
    run_dir = copy_run(sb3_run, tmp_path)
    path = run_dir / ("checkpoint/state.json" if target == "state.json" else "run.json")
    path.write_text(path.read_text()[:17])
    capsys.readouterr()
    started = time.perf_counter()
    assert cli("run", ["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(path) in err and "not valid JSON" in err
    assert time.perf_counter() - started < 5  # before any expensive setup


def test_a_corrupted_sb3_checkpoint_names_the_file(cli, sb3_run, copy_run, tmp_path, capsys):
    run_dir = copy_run(sb3_run, tmp_path)
    (zipped,) = list((run_dir / "checkpoint").glob("*.zip"))
    zipped.write_bytes(zipped.read_bytes()[:100])
    capsys.readouterr()
    assert cli("run", ["--resume", str(run_dir), "--steps", "2048"]) == 2
    err = capsys.readouterr().err
    assert "cannot read the SB3 PPO checkpoint" in err and str(zipped) in err


def test_malformed_yaml_is_one_line_naming_the_file(cli, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("scenario: {env: {num_candidates: 10}\nalgo: [unclosed\n")
    assert cli("run", ["--config", str(bad), "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"config file {bad} is not valid YAML" in err


def test_an_unwritable_output_location_fails_first_with_one_line(cli, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert cli("run", ["--agent", "random", "--smoke", "--logdir", str(blocker / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--logdir" in err and "cannot be written" in err


def test_resume_refuses_flags_it_would_ignore(cli, tmp_path, capsys):
    assert cli("run", ["--resume", str(tmp_path), "--scenario", "cognitive"]) == 2
    assert "--scenario would be ignored" in capsys.readouterr().err


# -------------------------------------------------------------------- compare
def _fake_run(root: Path, agent: str, seed: int, ret: float, stamp: str, status: str = "finished", **settings):
    run_dir = root / "mixed" / agent / f"{seed}-{stamp}"
    run_dir.mkdir(parents=True)
    defaults = dict(agent=agent, scenario="mixed", seed=seed, model_defaults=dict(get_agent(agent).model))
    (run_dir / "run.json").write_text(json.dumps(dict(defaults, **settings)))  # a run of this version's defaults
    row = dict(agent=agent, scenario="mixed", seed=seed, phase="final", env_steps=0, return_mean=ret)
    baseline = dict(row, agent="random", phase="baseline", return_mean=1.0)
    pd.DataFrame([row, baseline]).to_csv(run_dir / "results.csv", index=False)
    write_status(run_dir, status)
    return run_dir


def test_compare_counts_distinct_seeds_per_configuration_and_skips_what_is_broken(cli, tmp_path, capsys):
    _fake_run(tmp_path, "ppo", 0, 50.0, "20260101-000000")
    _fake_run(tmp_path, "ppo", 0, 60.0, "20260102-000000")  # a rerun of seed 0: the latest counts, once
    _fake_run(tmp_path, "ppo", 1, 62.0, "20260101-000000")
    _fake_run(tmp_path, "ppo", 2, 10.0, "20260101-000000", scenario_overrides={"env": {"history_len": 1}})
    _fake_run(tmp_path, "ppo", 3, 99.0, "20260101-000000", status="interrupted")
    garbled = _fake_run(tmp_path, "ppo", 4, 1.0, "20260101-000000")
    (garbled / "results.csv").write_bytes(b'agent,scen\x00\xff\n"unclosed')
    out = tmp_path / "out"
    assert cli("compare", [str(tmp_path / "mixed"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "status.json says interrupted: not finished" in err and str(garbled / "results.csv") in err
    table = pd.read_csv(out / "comparison.csv")
    ret = table[table.metric == "return_mean"].set_index("agent")
    assert ret.loc["ppo", "seeds"] == 2 and ret.loc["ppo", "mean"] == pytest.approx(61.0)
    (other,) = [a for a in ret.index if a.startswith("ppo [")]  # another configuration, apart
    assert ret.loc[other, "seeds"] == 1 and ret.loc[other, "mean"] == pytest.approx(10.0)


def test_seeds_listed_twice_are_an_error(cli, tmp_path, capsys):
    assert cli("run", ["--agent", "random", "--smoke", "--seeds", "1", "1", "--logdir", str(tmp_path)]) == 2
    assert "lists a seed twice" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_read_only_logdir_is_refused(cli, tmp_path, capsys):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    assert cli("run", ["--agent", "random", "--smoke", "--logdir", str(ro)]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_a_truncated_ppo_checkpoint_names_the_file(cli, ppo_smoke_run, copy_run, tmp_path, capsys):
    run_dir = copy_run(ppo_smoke_run, tmp_path)
    agent_json = run_dir / "checkpoint" / "agent.json"
    text = agent_json.read_text()
    agent_json.write_text(text[:9])
    capsys.readouterr()
    started = time.perf_counter()
    assert cli("run", ["--resume", str(run_dir), "--steps", "1024"]) == 2
    err = capsys.readouterr().err.strip()
    assert str(agent_json) in err and len(err.splitlines()) == 1
    assert time.perf_counter() - started < 5  # refused before Ray and the module are built
    agent_json.write_text(text)
    weights = sorted((run_dir / "checkpoint" / "algorithm").rglob("module_state.*"))  # the learner's module
    assert weights
    biggest = max(weights, key=lambda p: p.stat().st_size)
    biggest.write_bytes(biggest.read_bytes()[:64])
    assert cli("run", ["--resume", str(run_dir), "--steps", "1024"]) == 2
    err = capsys.readouterr().err
    assert "cannot restore the PPO checkpoint" in err and str(run_dir / "checkpoint" / "algorithm") in err


def test_validity_and_compare_refuse_unwritable_outputs(cli, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli("validity", ["--smoke", "--presets", "stationary", "--out", str(blocker / "v")]) == 2
    assert "--out" in capsys.readouterr().err
    assert cli("compare", [str(tmp_path), "--out", str(blocker / "c")]) == 2
    assert "cannot be written" in capsys.readouterr().err


# -------------------------------------------------------------------- memory
def test_users_that_would_not_fit_in_memory_are_refused_before_allocating(monkeypatch):
    from envs.config import make_scenario
    from envs.core import RecommenderCore
    from simulator import params

    monkeypatch.setattr(params, "physical_memory", lambda: float(2**30))  # a 1 GiB machine
    # 100,000 lifetime users need about 2 GiB (measured 20.6 KB per user through the vector env).
    with pytest.raises(ValueError, match=r"env: 100,000 users x env.history_len = 128.*GiB.*of this machine's memory"):
        RecommenderCore(make_scenario("lifetime"), 100_000, seed=0)
    RecommenderCore(make_scenario("lifetime", {"catalog": {"n_items": 200}}), 8, seed=0)  # small ones still build
