"""Runs that cannot lie: what a run directory says is what the run did, every reader refuses what it cannot
trust, a run stopped anywhere (a signal, a full disk) is left as a later --resume needs it, reports are
written all or nothing, and messages name what the user gave.

One test (or more) per class of issue 39. The runs are SB3 PPO smoke runs (no Ray processes): 1,024 steps,
evaluated and checkpointed every 256, so results.csv holds train rows at 256, 512, 768 and 1,024, then the
final evaluation and the random baseline.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SB3_SMOKE = ["--agent", "sb3-ppo", "--smoke", "--checkpoint-every", "1", "--eval-interval", "256"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _only_run(logdir: Path) -> Path:
    (path,) = [p for p in Path(logdir).glob("*/*/*") if p.is_dir()]
    return path


@pytest.fixture(scope="module")
def sb3_run(tmp_path_factory, cli) -> Path:
    """A finished SB3 PPO smoke run of 1,024 steps; each test works on its own copy (copy_run)."""
    logdir = tmp_path_factory.mktemp("sb3")
    assert cli("run", [*SB3_SMOKE, "--steps", "1024", "--logdir", str(logdir)]) == 0
    return _only_run(logdir)


def _results(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "results.csv")


def _torn(run_dir: Path) -> list[Path]:
    return [p for p in run_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".staging-")]


# ============================================================ 1. a run's record is the truth
def test_a_resume_records_the_budget_it_goes_on_to_and_the_label_follows(cli, sb3_run, copy_run, tmp_path):
    from experiments.core.settings import config_label

    run_dir = copy_run(sb3_run, tmp_path)
    before = json.loads((run_dir / "run.json").read_text())
    assert cli("run", ["--resume", str(run_dir), "--steps", "1280"]) == 0
    after = json.loads((run_dir / "run.json").read_text())
    assert before["steps"] == 1024 and after["steps"] == 1280  # what the run did, not what it started as
    (resume,) = after["resumes"]
    assert resume["from_env_steps"] == 1024 and resume["steps"] == 1280
    # Labelled as a 1,280-step run (never pooled with the 1,024-step runs), the label a run started at 1,280 has.
    started_so = dict(before, steps=1280)
    assert config_label(after) == config_label(started_so) != config_label(before)
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["env_steps"] == 1280


def test_one_process_at_a_time_works_in_a_run_and_a_dead_holder_keeps_nothing(cli, sb3_run, copy_run, tmp_path, capsys):
    """Two real processes: one holds the run (as a --resume under way does), the other's --resume is refused
    before any work; after a kill -9 of the holder the run is free again."""
    run_dir = copy_run(sb3_run, tmp_path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from experiments.core.rundirs import RunLock; "
         "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)", str(run_dir)],
        cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        rows = (run_dir / "results.csv").read_bytes()
        capsys.readouterr()
        assert cli("run", ["--resume", str(run_dir), "--steps", "1280"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"pid {holder.pid}" in err and "in use" in err
        assert (run_dir / "results.csv").read_bytes() == rows  # nothing written twice, nothing dropped
        from experiments.core.rundirs import lock_holder

        assert f"pid {holder.pid}" in lock_holder(run_dir)
    finally:
        holder.kill()  # SIGKILL: no cleanup in the holder
        holder.wait()
    assert lock_holder(run_dir) is None  # the kernel dropped the lock with its holder
    assert cli("run", ["--resume", str(run_dir), "--steps", "1280"]) == 0
    train = _results(run_dir).query("phase == 'train'").env_steps.to_numpy()
    assert list(train) == [256, 512, 768, 1024, 1280]


def _break(run_dir: Path, fault: str) -> Path:
    """Apply `fault` to a copy of a finished run; returns the file at fault."""
    from experiments.core.rundirs import write_status

    results = run_dir / "results.csv"
    if fault == "interrupted":
        write_status(run_dir, "interrupted", reason="stopped by SIGTERM", env_steps=512)
        return run_dir / "status.json"
    if fault == "killed":  # marked running, and no process holds the run
        write_status(run_dir, "running", env_steps=512)
        return run_dir / "status.json"
    if fault == "lost final rows":
        lines = results.read_text().splitlines(keepends=True)
        results.write_text("".join(lines[:-2]))
        return results
    if fault == "cut mid-row":
        text = results.read_text()
        results.write_text(text[: len(text) - 40])
        return results
    if fault == "truncated run.json":
        (run_dir / "run.json").write_text((run_dir / "run.json").read_text()[:30])
        return run_dir / "run.json"
    if fault == "unknown key":
        record = json.loads((run_dir / "run.json").read_text())
        (run_dir / "run.json").write_text(json.dumps(dict(record, stepz=3)))
        return run_dir / "run.json"
    if fault == "older checkpoint":
        state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
        (run_dir / "checkpoint" / "state.json").write_text(json.dumps(dict(state, env_steps=768)))
        return run_dir / "checkpoint" / "state.json"
    if fault == "nan return":
        rows = pd.read_csv(results)
        rows.loc[rows.phase == "final", "return_mean"] = np.nan
        rows.to_csv(results, index=False)
        return results
    raise AssertionError(fault)


FAULTS = [
    ("interrupted", "says interrupted"),
    ("killed", "no process holds the run: it was killed"),
    ("lost final rows", "has no final evaluation"),
    ("cut mid-row", "is cut mid-row"),
    ("truncated run.json", "is not valid JSON"),
    ("unknown key", "unknown setting 'stepz'"),
    ("older checkpoint", "older than the final evaluation"),
    ("nan return", "final return_mean of nan"),
]


@pytest.mark.parametrize("fault, why", FAULTS, ids=[f for f, _ in FAULTS])
def test_every_reader_refuses_what_is_unfinished_truncated_or_inconsistent(
    cli, sb3_run, copy_run, tmp_path, capsys, fault, why
):
    """compare names and skips the broken run and counts the whole one (treatment against control on the
    same run); stress --load, offline --ppo-run, validity --history-runs and restore_policy refuse it in
    one line that names the flag, the file and why, before any output directory is made."""
    from experiments.core.restore import restore_policy

    good = copy_run(sb3_run, tmp_path / "good")
    bad = copy_run(sb3_run, tmp_path / "bad")
    where = _break(bad, fault)
    out = tmp_path / "compare"
    capsys.readouterr()
    assert cli("compare", [str(tmp_path / "good"), str(tmp_path / "bad"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("skipped")]
    assert str(where) in line and why in line
    seeds = pd.read_csv(out / "comparison.csv").query("metric == 'return_mean' and agent == 'sb3-ppo'").seeds
    assert list(seeds) == [1]  # the whole run, and only it
    readers = [
        (
            "stress",
            ["--smoke", "--load", str(bad), "--train-scenario", "mixed", "--out", str(tmp_path / "s")],
            "--load",
        ),
        ("offline", ["--smoke", "--ppo-run", str(bad), "--out", str(tmp_path / "o")], "--ppo-run"),
        ("validity", ["--smoke", "--history-runs", str(bad), "--out", str(tmp_path / "v")], "--history-runs"),
    ]
    for name, argv, flag in readers:
        assert cli(name, argv) == 2, name
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"{flag} {where}" in err and why in err, err
        assert not Path(argv[-1]).exists()  # refused before any output directory
    with pytest.raises(ValueError, match=why.replace("(", r"\(")):
        restore_policy(bad)
    assert restore_policy(good)[1] is not None


def test_a_resume_drops_a_row_cut_mid_line_and_says_what_is_lost(cli, sb3_run, copy_run, tmp_path, capsys):
    """A kill or a full disk while a row was written cut results.csv in the row of step 768: the resume drops
    that row (never a bogus one), says which evaluations are lost, and goes on from the checkpoint."""
    from experiments.core.records import load_run, read_results

    run_dir = copy_run(sb3_run, tmp_path)
    lines = (run_dir / "results.csv").read_text().splitlines(keepends=True)
    cut = next(i for i, line in enumerate(lines) if ",train,768," in line)
    (run_dir / "results.csv").write_text("".join(lines[:cut]) + lines[cut][: len(lines[cut]) // 2])
    capsys.readouterr()
    assert cli("run", ["--resume", str(run_dir), "--steps", "1280"]) == 0
    err = capsys.readouterr().err
    assert f"line {cut + 1} is cut mid-row (it does not end its line): dropped" in err
    assert "evaluations logged after env step 512 and before the checkpoint at 1,024 are lost" in err
    rows = _results(run_dir)
    assert not read_results(run_dir).bad  # every row whole
    assert list(rows.query("phase == 'train'").env_steps) == [256, 512, 1280]
    assert rows.ctr.notna().all() and rows.return_mean.notna().all()  # no bogus row
    assert load_run(run_dir).final.env_steps == 1280  # and every reader takes the run


def test_tensorboard_keeps_the_checkpoints_own_step_after_a_resume(cli, sb3_run, copy_run, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def points(run_dir: Path) -> list[tuple[int, float]]:
        acc = EventAccumulator(str(run_dir))
        acc.Reload()
        return sorted((e.step, e.value) for e in acc.Scalars("eval/return_mean"))

    run_dir = copy_run(sb3_run, tmp_path)
    before = points(run_dir)
    assert cli("run", ["--resume", str(run_dir), "--steps", "1280"]) == 0
    after = points(run_dir)
    # What the checkpoint at 1,024 had seen (its own step included) is kept, and each point once; then 1,280.
    assert [p for p in after if p[0] <= 1024] == before and {s for s, _ in before} == {256, 512, 768, 1024}
    assert {s for s, _ in after if s > 1024} == {1280}


# ============================================================ 2. costs estimated before the work
@pytest.mark.parametrize(
    "argv, named",
    [
        (["--final-eval-users", "100000000"], "--final-eval-users 100,000,000"),
        (["--eval-users", "100000000"], "--eval-users 100,000,000"),
        (["--seeds", "0", "1", "--final-eval-users", "100000000"], "--final-eval-users 100,000,000"),
    ],
)
def test_a_size_that_would_not_fit_is_refused_before_any_work(cli, tmp_path, capsys, argv, named):
    started = time.perf_counter()
    assert cli("run", [*SB3_SMOKE, *argv, "--logdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and named in err and "of this machine's memory" in err
    assert not (tmp_path / "runs").exists() and time.perf_counter() - started < 10


def test_every_size_that_decides_memory_is_checked_on_a_small_machine(monkeypatch, cli, tmp_path, capsys):
    """Treatment against control on a 1 GiB machine: the same run with a size that fits is accepted."""
    from experiments.core.costs import check_run_memory
    from experiments.core.settings import RunSettings
    from simulator import params

    monkeypatch.setattr(params, "physical_memory", lambda: float(2**30))
    lifetime = dict(agent="ppo", scenario="lifetime", steps=512)
    check_run_memory(RunSettings(**lifetime, final_eval_users=64))  # control: fits
    for changes, named in [
        (dict(final_eval_users=20_000), "--final-eval-users 20,000"),  # 20,000 x ~280 KB (network and env)
        (
            dict(algo={"num_envs_per_env_runner": 40_000, "rollout_fragment_length": 1, "train_batch_size": 40_000}),
            "algo.num_envs_per_env_runner 40,000",
        ),
        (dict(algo={"train_batch_size": 400_000, "minibatch_size": 512}), "algo.train_batch_size = 400,000"),
        (dict(algo={"train_batch_size": 16_384, "minibatch_size": 16_384}), "algo.minibatch_size = 16,384"),
    ]:
        with pytest.raises(ValueError, match=named):
            check_run_memory(RunSettings(**{**lifetime, **changes}))
    assert (
        cli(
            "stress",
            ["--smoke", "--eval-users", "2000000", "--train-scenario", "lifetime", "--out", str(tmp_path / "s")],
        )
        == 2
    )  # the smoke lifetime's users are small (~9 KB each): 2,000,000 of them are not
    assert "--eval-users 2,000,000" in capsys.readouterr().err and not (tmp_path / "s").exists()


# ============================================================ 3. signals and faults anywhere in a run's life
def test_a_signal_at_start_up_leaves_no_run_behind(cli, tmp_path, capsys, monkeypatch):
    from experiments.core import training

    def interrupted_while_building(*args, **kwargs):  # Ctrl-C while Ray and the model are being built
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        raise AssertionError("the signal did not stop the start-up")

    monkeypatch.setattr(training, "build_agent", interrupted_while_building)
    capsys.readouterr()
    assert cli("run", [*SB3_SMOKE, "--logdir", str(tmp_path)]) == 128 + signal.SIGINT
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "stopped by SIGINT during start-up: nothing was run (run directory removed)"
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no run directory with only run.json


def test_a_signal_during_the_final_evaluation_leaves_a_resumable_run(
    cli, sb3_run, copy_run, tmp_path, capsys, monkeypatch
):
    from experiments.core import training
    from experiments.core.rundirs import read_status

    run_dir = copy_run(sb3_run, tmp_path)
    evaluate = training.evaluate

    def terminated_mid_evaluation(policy, config, n_users, seed, progress=None):
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's SIGTERM, in the middle of the final evaluation
        time.sleep(5)
        raise AssertionError("the signal did not stop the evaluation")

    monkeypatch.setattr(training, "evaluate", terminated_mid_evaluation)
    capsys.readouterr()
    assert cli("run", ["--resume", str(run_dir)]) == 128 + signal.SIGTERM
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        "stopped by SIGTERM during the final evaluation: checkpoint saved (1,024 env steps); "
        f"continue with: python experiments/run.py --resume {run_dir}"
    )
    status = read_status(run_dir)
    assert status["status"] == "interrupted" and status["env_steps"] == 1024 and not _torn(run_dir)
    assert list(_results(run_dir).phase) == ["train"] * 4  # the resume took back the final rows; none came
    monkeypatch.setattr(training, "evaluate", evaluate)
    assert cli("run", ["--resume", str(run_dir)]) == 0  # evaluates again, trains nothing
    rows = _results(run_dir)
    assert list(rows.phase) == ["train"] * 4 + ["final", "baseline"] and rows.env_steps.max() == 1024


def test_a_full_disk_at_a_checkpoint_stops_the_run_resumable_and_leaves_no_temporary_files(
    cli, tmp_path, capsys, monkeypatch
):
    """An injected ENOSPC at the third checkpoint (as a full disk gives): one line with the resume hint,
    status failed, the second checkpoint whole, no .tmp left; the resume finishes the run."""
    from agents.sb3_agent import SB3PPOAgent
    from experiments.core.rundirs import read_status

    save, calls = SB3PPOAgent.save, []

    def full_disk_at_the_third(self, path):
        calls.append(path)
        if len(calls) == 3:
            Path(path).mkdir(parents=True, exist_ok=True)
            (Path(path) / "half.zip").write_bytes(b"\0" * 100)
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(path) / "sb3_ppo.zip"))
        return save(self, path)

    monkeypatch.setattr(SB3PPOAgent, "save", full_disk_at_the_third)
    capsys.readouterr()
    assert cli("run", [*SB3_SMOKE, "--steps", "1024", "--logdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    run_dir = _only_run(tmp_path)
    assert err[-1].startswith(f"error: {run_dir}: No space left on device writing ")
    assert err[-1].endswith(f"free some space, then continue with: python experiments/run.py --resume {run_dir}")
    assert read_status(run_dir)["status"] == "failed" and not _torn(run_dir)
    assert json.loads((run_dir / "checkpoint" / "state.json").read_text())["env_steps"] == 512
    monkeypatch.setattr(SB3PPOAgent, "save", save)
    assert cli("run", ["--resume", str(run_dir)]) == 0
    train = _results(run_dir).query("phase == 'train'").env_steps
    assert list(train) == [256, 512, 768, 1024]  # the evaluation at 768 is measured again, once


def test_a_row_that_cannot_be_written_leaves_no_half_row(tmp_path, monkeypatch):
    from experiments.core import tracking

    path = tmp_path / "results.csv"
    path.write_text("agent,scenario\nppo,mixed\n")
    real_write = os.write

    def half_then_full(fd, data):  # the disk fills in the middle of the row
        real_write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tracking.os, "write", half_then_full)
    with pytest.raises(OSError):
        tracking.append_whole(path, "sb3-ppo,lifetime\n")
    assert path.read_text() == "agent,scenario\nppo,mixed\n"


def _mount_tmpfs(where: Path, size: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    return done.returncode == 0


def test_a_full_disk_on_a_small_tmpfs(cli, tmp_path, capsys):
    """The real thing: the run directory on a tmpfs too small for the run. The run stops with one line,
    marked failed, without temporary files; with the disk made larger, the resume finishes it."""
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "450k"):  # one checkpoint fits, a second beside it does not
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        capsys.readouterr()
        assert cli("run", [*SB3_SMOKE, "--steps", "100000", "--logdir", str(disk)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        run_dir = _only_run(disk)
        assert "No space left on device" in err[-1] and f"--resume {run_dir}" in err[-1]
        status = json.loads((run_dir / "status.json").read_text())
        assert status["status"] == "failed" and not _torn(run_dir)
        from experiments.core.records import read_results

        assert not read_results(run_dir).bad  # no half row
        subprocess.run(["mount", "-o", "remount,size=64m", str(disk)], check=True)
        saved = json.loads((run_dir / "checkpoint" / "state.json").read_text())["env_steps"]
        assert cli("run", ["--resume", str(run_dir), "--steps", str(saved + 256)]) == 0
        train = _results(run_dir).query("phase == 'train'").env_steps.to_numpy()
        assert (train[1:] > train[:-1]).all() and train[-1] == saved + 256
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_local_rays_processes_end_with_a_driver_killed_by_sigkill(tmp_path):
    """Measured without the watcher: the dashboard and runtime-env agents (178 MB) outlived the driver by
    62 s. With it, every process of the driver's Ray session is gone within seconds."""
    script = (
        "import ray\n"
        "ray.init(num_cpus=1, include_dashboard=False)\n"
        "from experiments.core.reaper import local_session, watch_local_ray\n"
        "assert watch_local_ray()\n"
        "session, raylet = local_session()\n"
        "print(session, raylet, flush=True)\n"
        "import time; time.sleep(600)\n"
    )
    driver = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        session, raylet = driver.stdout.readline().split()
    finally:
        driver.kill()
    driver.wait()

    def session_processes() -> list[int]:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if session.encode() in cmd or f"RAY_RAYLET_PID={raylet}".encode() in env:
                found.append(int(pid))
        return found

    deadline = time.time() + 15
    while session_processes() and time.time() < deadline:
        time.sleep(0.2)
    assert not session_processes()


# ============================================================ 4. outputs all or nothing
def test_compare_writes_all_of_its_outputs_or_none_and_refuses_a_nan(
    cli, sb3_run, copy_run, tmp_path, capsys, monkeypatch
):
    from experiments.studies.comparison import analysis

    for seed_dir in ("a", "b"):
        copy_run(sb3_run, tmp_path / "runs" / seed_dir)
    nan = copy_run(sb3_run, tmp_path / "runs" / "nan")
    _break(nan, "nan return")
    out = tmp_path / "out"
    assert cli("compare", [str(tmp_path / "runs"), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped: {nan / 'results.csv'} has a final return_mean of nan: refused" in err
    written = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"comparison.csv", "comparison.md", "return.png"} <= set(written)

    def broken_plot(summary, path):  # a failure after the tables were made: nothing may be half-replaced
        raise RuntimeError("matplotlib failed")

    monkeypatch.setattr(analysis, "plot", broken_plot)
    shutil.rmtree(tmp_path / "runs" / "a")  # a different table, were it written
    with pytest.raises(RuntimeError):
        cli("compare", [str(tmp_path / "runs"), "--out", str(out)])
    assert {p.name: p.read_bytes() for p in out.iterdir()} == written  # untouched, no staging folder left


def test_a_nan_final_return_is_refused_naming_the_run(cli, tmp_path, capsys, monkeypatch):
    from experiments.core import training
    from experiments.core.rundirs import read_status

    evaluate = training.evaluate

    def nan_for_the_policy(policy, config, n_users, seed, progress=None):
        ev = evaluate(policy, config, n_users, seed, progress)
        if progress is not None:  # the final evaluation of the run's policy (random's comes without one)
            ev.metrics["return_mean"] = float("nan")
        return ev

    monkeypatch.setattr(training, "evaluate", nan_for_the_policy)
    assert cli("run", ["--agent", "random", "--smoke", "--logdir", str(tmp_path)]) == 2
    run_dir = _only_run(tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: {run_dir}: the final evaluation's return_mean is nan: refused"
    assert read_status(run_dir)["status"] == "failed" and not (run_dir / "results.csv").exists()


# ============================================================ 5. messages name what the user gave
def test_bad_seeds_are_refused_by_name_before_any_directory(cli, tmp_path, capsys):
    import gymnasium as gym

    import envs  # noqa: F401  (registers DriftRec-v0)

    assert cli("stress", ["--smoke", "--seeds", "-1", "--agents", "random", "--out", str(tmp_path / "s")]) == 2
    assert capsys.readouterr().err.strip() == "error: --seeds must be an integer >= 0, got -1"
    assert cli("run", ["--agent", "random", "--smoke", "--seeds", "0", "-1", "--logdir", str(tmp_path / "r")]) == 2
    assert capsys.readouterr().err.strip() == "error: --seeds must be an integer >= 0, got -1"
    assert not (tmp_path / "s").exists() and not (tmp_path / "r").exists()  # seed 0 did not run first
    with pytest.raises(ValueError, match=r"^seed must be an integer >= 0, got -5$"):
        gym.make("DriftRec-v0", seed=-5)


def test_a_wrong_shape_action_on_the_single_env_names_the_shape_given():
    from envs import RecEnv

    env = RecEnv("mixed", {"catalog": {"n_items": 100}})
    env.reset(seed=0)
    with pytest.raises(ValueError) as err:
        env.step(np.array([1, 2]))
    assert "got shape (2,)" in str(err.value) and "shape ()" in str(err.value) and "(1, 2)" not in str(err.value)
    slates = RecEnv("mixed", {"catalog": {"n_items": 100}, "env": {"slate_size": 3}})
    slates.reset(seed=0)
    with pytest.raises(ValueError, match=r"a slate of 3 candidate indices, shape \(3,\), got shape \(2,\)"):
        slates.step(np.array([0, 1]))


def test_realdata_without_the_data_packages_is_one_line(cli, capsys, monkeypatch):
    from simulator import realdata

    def not_installed(package):
        raise realdata.RealDataUnavailable(f"{package} is not installed: pip install --no-deps recbole==1.2.1")

    monkeypatch.setattr(realdata, "package_dir", not_installed)
    assert cli("bench", ["realdata", "--skip-recbole", "--max-users", "10"]) is None
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and "pip install" in err


def test_corrupted_report_files_are_one_line_naming_the_file(cli, tmp_path, capsys):
    update = tmp_path / "validity"
    update.mkdir()
    (update / "policies.csv").write_text("preset,seed,policy,return_mean\nshock,0,random,1.0\nshock,1,random,1.0\n")
    (update / "drift.csv").write_text("")
    (update / "history.csv").write_text("")
    (update / "commands.csv").write_bytes(b"command,presets\n\xff\xfe\x00garbage\x81\n")
    assert cli("validity", ["--smoke", "--presets", "shock", "--history-agents", "--update", str(update)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(update / "commands.csv") in err and "--update" in err
    stress = tmp_path / "stress"
    stress.mkdir()
    (stress / "settings.json").write_text('{"agents": ["random"], "seeds": [0')
    (stress / "jobs.pkl").write_bytes(b"\x80\x04truncated")
    assert cli("stress", ["--report-only", str(stress)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(stress / "settings.json") in err
