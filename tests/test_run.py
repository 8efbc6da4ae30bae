"""experiments/run.py end to end at smoke sizes, and its error paths."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch


def _run_dir(logdir: Path, scenario: str, agent: str) -> Path:
    (path,) = list((logdir / scenario / agent).iterdir())
    return path


def _scalar_tags(run_dir: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return set(acc.Tags()["scalars"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--agent", "nope"], "valid agents: ppo, sb3-ppo"),
        (["--scenario", "nope"], "valid scenarios: stationary"),
        (["--resume", "/nonexistent/run"], "no run directory at /nonexistent/run"),
        (["--steps", "0"], "--steps must be >= 1"),
        (["--agent", "random", "--num-env-runners", "2"], "--num-env-runners applies to --agent ppo"),
    ],
)
def test_bad_flags_exit_nonzero_with_a_clear_message(cli, argv, message, tmp_path, capsys):
    assert cli("run", argv + ["--logdir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_an_error(cli, tmp_path, capsys):
    assert cli("run", ["--device", "cuda", "--smoke", "--logdir", str(tmp_path)]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err


def test_config_file_sections_are_checked(cli, tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optimizer: {lr: 0.1}\n")
    assert cli("run", ["--config", str(bad), "--logdir", str(tmp_path)]) == 2
    assert "unknown section 'optimizer'" in capsys.readouterr().err
    bad.write_text("algo: {learning_rate_typo: 0.1}\n")
    assert cli("run", ["--agent", "ppo", "--smoke", "--config", str(bad), "--logdir", str(tmp_path)]) == 2
    assert "learning_rate_typo" in capsys.readouterr().err


def test_reference_policy_run_writes_results(cli, tmp_path):
    assert cli("run", ["--agent", "oracle-session", "--smoke", "--logdir", str(tmp_path)]) == 0
    run_dir = _run_dir(tmp_path, "mixed", "oracle-session")
    results = pd.read_csv(run_dir / "results.csv")
    assert set(results.phase) == {"final", "baseline"}
    final = results.set_index("phase").return_mean
    assert final["final"] > final["baseline"]  # the session oracle beats random on the same users
    assert "eval/return_mean" in _scalar_tags(run_dir)


def test_ppo_smoke_writes_checkpoint_and_eval_and_resumes(cli, ppo_smoke_run, copy_run, tmp_path):
    run_dir = copy_run(ppo_smoke_run, tmp_path)  # `run.py --agent ppo --smoke` (conftest), resumed here
    ckpt = run_dir / "checkpoint"
    assert (ckpt / "state.json").is_file() and (ckpt / "algorithm").is_dir()
    tags = _scalar_tags(run_dir)
    assert {"eval/return_mean", "eval/ctr", "train/policy_loss", "train/episode_return_mean"} <= tags
    steps_before = json.loads((ckpt / "state.json").read_text())["env_steps"]
    results = pd.read_csv(run_dir / "results.csv")
    assert (results.phase == "train").any() and (results.phase == "final").sum() == 1

    # A resumed run continues from the checkpoint, not from scratch.
    assert cli("run", ["--resume", str(run_dir), "--steps", str(steps_before + 256)]) == 0
    steps_after = json.loads((ckpt / "state.json").read_text())["env_steps"]
    assert steps_after > steps_before
    # The resumed run's final evaluation replaces the first one (rows past the checkpoint are dropped).
    after = pd.read_csv(run_dir / "results.csv")
    assert (after.phase == "final").sum() == 1 and after[after.phase == "final"].env_steps.item() == steps_after


def test_resume_with_an_incompatible_checkpoint_is_an_error(cli, ppo_smoke_run, copy_run, tmp_path, capsys):
    run_dir = copy_run(ppo_smoke_run, tmp_path)
    settings = json.loads((run_dir / "run.json").read_text())
    settings["model"]["d_model"] = 32  # the saved network has d_model 16
    (run_dir / "run.json").write_text(json.dumps(settings))
    assert cli("run", ["--resume", str(run_dir)]) == 2
    assert "incompatible" in capsys.readouterr().err


def test_sb3_smoke_writes_checkpoint_and_eval(cli, tmp_path):
    assert cli("run", ["--agent", "sb3-ppo", "--smoke", "--logdir", str(tmp_path)]) == 0
    run_dir = _run_dir(tmp_path, "mixed", "sb3-ppo")
    assert (run_dir / "checkpoint" / "sb3_ppo.zip").is_file()
    assert {"eval/return_mean", "train/policy_loss"} <= _scalar_tags(run_dir)


def test_bad_agent_settings_exit_2_and_leave_no_run_directory(cli, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("algo: {top: 0}\n")
    logdir = tmp_path / "runs"
    assert cli("run", ["--agent", "oracle-lookahead", "--config", str(cfg), "--logdir", str(logdir)]) == 2
    assert "algo.top must be in [1, inf], got 0" in capsys.readouterr().err
    assert not list(logdir.rglob("run.json"))
