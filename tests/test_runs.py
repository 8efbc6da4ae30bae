"""The run library (experiments/core/) and the agent registry: settings are validated before any
work, agents describe themselves, and Ray jobs ask for the device their run trains on."""

from __future__ import annotations

import sys
import types

import pytest

from agents.registry import AGENTS, get_agent, parse_variant
from experiments.core import devices
from experiments.core.devices import resolve_device
from experiments.core.fanout import ray_device, ray_tasks, run_seeds
from experiments.core.records import load_run
from experiments.core.settings import SMOKE_SCENARIO, SMOKE_SIZES, RunSettings, changed_dynamics, with_smoke_sizes


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(steps=0), "--steps must be >= 1, got 0"),
        (dict(seed=-1), "--seed must be >= 0, got -1"),
        (dict(eval_interval=-5), "--eval-interval must be >= 0, got -5"),
        (dict(checkpoint_every=0), "--checkpoint-every must be >= 1, got 0"),
        (dict(final_eval_users=1), "--final-eval-users must be >= 2"),
        (dict(steps=1.5), "--steps must be an integer"),
        (dict(device="tpu"), "--device must be one of auto, cpu, cuda"),
        (dict(agent="nope"), "unknown agent 'nope'"),
        (dict(scenario="nope"), "unknown scenario 'nope'"),
        (dict(scenario_overrides={"catalog": {"n_itemz": 3}}), "unknown config key 'catalog.n_itemz'"),
        (dict(algo={"lr": -1.0}), "algo.lr must be in"),
        (dict(agent="random", algo={"lr": 0.1}), "random takes no algo settings"),
        (dict(model={"depth": 2}), "unknown model config key 'depth'"),
        (dict(model={"d_model": 30, "n_heads": 4}), "divisible by n_heads"),
        (dict(agent="popularity", keep_best=True), "--keep-best keeps a training run's best snapshot"),
        (dict(keep_best="yes"), "--keep-best must be true or false"),
    ],
)
def test_bad_settings_fail_on_construction_naming_the_field(kw, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[")):
        RunSettings(**kw)


def test_settings_round_trip_through_run_json_and_name_the_retraining_variant():
    s = RunSettings(agent="sasrec", scenario="cognitive", algo={"retrain_every": 5, "epochs": 1}, seed=3)
    assert s.name == "sasrec-retrain" and s.spec.retrains and not s.spec.trains
    assert RunSettings.from_dict(s.to_dict()) == s
    assert RunSettings(agent="sasrec").name == "sasrec"
    assert RunSettings(steps=1000).interval == 100 and RunSettings(eval_interval=7).interval == 7
    with pytest.raises(ValueError, match="unknown setting 'stepz'"):
        RunSettings.from_dict(dict(s.to_dict(), stepz=1))


def test_smoke_sizes_sit_under_explicit_flags_and_the_config():
    base = RunSettings(agent="sasrec", algo={"epochs": 4}, scenario_overrides={"catalog": {"n_items": 150}})
    smoke = with_smoke_sizes(base, eval_users=64)
    assert smoke.eval_users == 64  # an explicit flag wins
    assert smoke.final_eval_users == SMOKE_SIZES["final_eval_users"]
    assert smoke.algo["epochs"] == 4 and smoke.algo["log_users"] == get_agent("sasrec").smoke["log_users"]
    assert smoke.scenario_config().world.catalog.n_items == 150  # the config's overrides win too
    assert smoke.scenario_config().env.history_len == SMOKE_SCENARIO["env"]["history_len"]


def test_every_agent_describes_itself_consistently():
    for name, spec in AGENTS.items():
        assert spec.name == name and spec.description
        spec.make_params(spec.smoke)  # its smoke sizes are valid settings
        life = spec.lifetime  # and so are its lifetime defaults; only a training run has a best snapshot
        spec.make_params({**life.algo, **life.keep_best_algo})
        assert life.keep_best_evaluations >= 0 and (
            spec.trains or not (life.keep_best_evaluations or life.keep_best_algo)
        )
        if spec.params is None:
            assert spec.make_params() is None and not spec.smoke
    assert {n for n, s in AGENTS.items() if s.trains} == {"ppo", "sb3-ppo"}
    assert parse_variant("sasrec-retrain") == (get_agent("sasrec"), True)
    with pytest.raises(ValueError, match="only sasrec and gru4rec retrain"):
        parse_variant("bandit-retrain")


def test_duplicate_seeds_are_an_error_before_any_run(tmp_path):
    with pytest.raises(ValueError, match="lists a seed twice"):
        run_seeds(RunSettings(agent="random"), [0, 1, 0], tmp_path)
    assert not list(tmp_path.iterdir())


class FakeRay(types.ModuleType):
    """Just enough of ray to see what resources the tasks ask for."""

    def __init__(self, gpus: float) -> None:
        super().__init__("ray")
        self.gpus, self.requested = gpus, []

    def is_initialized(self) -> bool:
        return True

    def cluster_resources(self) -> dict[str, float]:
        return {"CPU": 8.0, "GPU": self.gpus}

    def remote(self, **resources):
        self.requested.append(resources)
        return lambda fn: types.SimpleNamespace(remote=lambda *args: fn(*args))

    def get(self, values):
        return values


def test_ray_jobs_ask_for_a_gpu_on_cuda_and_never_fall_back_quietly(monkeypatch, capsys):
    fake = FakeRay(gpus=2)
    monkeypatch.setitem(sys.modules, "ray", fake)
    assert ray_tasks(lambda x: x + 1, [(1,), (2,)], parallel=2, device="cuda") == [2, 3]
    assert fake.requested[-1] == {"num_cpus": 1, "num_gpus": 1}
    ray_tasks(lambda x: x, [(1,)], parallel=1, device="cpu")
    assert fake.requested[-1] == {"num_cpus": 1, "num_gpus": 0}
    # `auto` is decided by the cluster's GPUs, not by the driver's.
    assert ray_device("auto", ray_address="ray://cluster:10001") == "cuda"
    monkeypatch.setitem(sys.modules, "ray", FakeRay(gpus=0))
    with pytest.raises(ValueError, match="Ray cluster has no GPU"):
        ray_tasks(lambda x: x, [(1,)], parallel=1, device="cuda")
    with pytest.raises(ValueError, match="Ray cluster has no GPU"):
        ray_device("cuda", ray_address="ray://cluster:10001")
    assert ray_device("auto", ray_address="ray://cluster:10001") == "cpu"
    assert "training on the CPU" in capsys.readouterr().err


def test_cuda_is_resolved_in_the_driver_before_any_job(monkeypatch):
    monkeypatch.setattr(devices, "cuda_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        ray_device("cuda", ray_address=None)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(devices, "cuda_available", lambda: True)
    assert resolve_device("auto") == "cuda" and ray_device("auto", None) == "cuda"


def _recorded_run(tmp_path, record):
    import json

    run_dir = tmp_path / "0-20260101-000000"
    (run_dir / "checkpoint").mkdir(parents=True)
    (run_dir / "run.json").write_text(json.dumps(record))
    (run_dir / "checkpoint" / "state.json").write_text(json.dumps({"env_steps": 4096, "iteration": 1}))
    return run_dir


def test_a_run_of_a_preset_as_it_was_before_a_change_is_never_read_as_todays(tmp_path):
    from experiments.studies.comparison import analysis

    record = RunSettings(agent="ppo", scenario="mixed").to_dict()
    assert record["scenario_config"]["world"]["users"]["n_communities"] == 4  # what mixed resolves to today
    assert changed_dynamics(record) == [] and load_run(_recorded_run(tmp_path / "now", record), finished=False)
    # The same run.json as if written before a change of the population in `mixed`.
    record["scenario_config"]["world"]["users"]["n_communities"] = 16
    assert changed_dynamics(record) == ["world.users"]
    old = _recorded_run(tmp_path / "then", record)
    with pytest.raises(ValueError, match=r"records 'mixed' as it was when the run was trained.*\(in world.users\)"):
        load_run(old, finished=False)
    assert analysis._config(record) == "earlier dynamics"  # a separate row in every comparison, never pooled
    # A field added to the config since the run was recorded had its default then (a new mechanism
    # comes in off): not a change; the same field recorded at another value is one.
    record["scenario_config"]["world"]["users"]["n_communities"] = 4
    del record["scenario_config"]["world"]["users"]["length_taste"]
    assert changed_dynamics(record) == []
    record["scenario_config"]["world"]["users"]["length_taste"] = 0.5
    assert changed_dynamics(record) == ["world.users"]
    del record["scenario_config"]  # runs from before the record: nothing to compare, read as today's
    assert changed_dynamics(record) == []


def test_runs_started_in_the_same_second_get_distinct_directories(tmp_path, monkeypatch):
    # Parallel seeds and Tune trials are separate processes: the name must be claimed by
    # mkdir itself, not by an exists() check another process can pass at the same moment.
    import threading

    from experiments.core import tracking

    monkeypatch.setattr(tracking.time, "strftime", lambda fmt: "20261203-170425")
    monkeypatch.setattr(tracking.Path, "exists", lambda self: False)  # every racer saw it free
    barrier, made, errors = threading.Barrier(8), [], []

    def start() -> None:
        barrier.wait()
        try:
            made.append(tracking.new_run_dir(tmp_path, "mixed", "ppo", 0))
        except OSError as error:
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(made)) == 8 and all(path.is_dir() for path in made)


def test_an_agents_model_defaults_are_recorded_and_a_record_keeps_the_model_it_was_trained_with(monkeypatch):
    """Treatment against control: an agent whose registry entry gains model defaults builds new runs
    with them (recorded in run.json, beneath the config file's model section), while a record from
    before the defaults existed reads back with none and gets its own configuration label."""
    import dataclasses

    from experiments.core.settings import config_label

    before = RunSettings(agent="sasrec").to_dict()  # the control: no model defaults yet
    assert before["model_defaults"] == {}
    spec = dataclasses.replace(get_agent("sasrec"), model={"d_model": 32})
    monkeypatch.setitem(AGENTS, "sasrec", spec)
    now = RunSettings(agent="sasrec", model={"n_layers": 1})
    assert now.model_defaults == {"d_model": 32}
    assert now.resolved_model == {"d_model": 32, "n_layers": 1}
    assert RunSettings(agent="sasrec", model={"d_model": 16}).resolved_model == {"d_model": 16}  # the file wins
    record = now.to_dict()
    assert RunSettings.from_dict(record).resolved_model == now.resolved_model
    old = {k: v for k, v in before.items() if k != "model_defaults"}  # written before model defaults
    assert RunSettings.from_dict(old).resolved_model == {}
    assert config_label(RunSettings(agent="sasrec").to_dict()) == ""  # today's defaults
    assert config_label(old) != ""  # kept apart from today's default runs


class _StepCounter:
    """A stand-in trainable agent: each iteration adds 100 env steps; its policy serves randomly and, with
    `moves_at`, is fingerprinted as unchanged until that step (as a PPO critic warm-up leaves the actor)."""

    def __init__(self, moves_at: int | None) -> None:
        self.env_steps, self.moves_at = 0, moves_at

    def train_iteration(self) -> dict[str, float]:
        self.env_steps += 100
        return {"loss": 0.0}

    def policy(self):
        from agents.policy import RandomPolicy

        policy = RandomPolicy(seed=0)
        if self.moves_at is not None:
            policy.fingerprint = lambda: "warm start" if self.env_steps < self.moves_at else f"step {self.env_steps}"
        return policy

    def save(self, path) -> None:
        path.mkdir(parents=True, exist_ok=True)


@pytest.mark.parametrize("moves_at", [None, 400])
def test_an_evaluation_of_an_unchanged_policy_is_reused_not_re_run(tmp_path, monkeypatch, moves_at):
    """Treatment (a fingerprinted policy that stays the same for the first 3 evaluations) against control
    (no fingerprint): the same figures at every evaluation; the harness runs 6 evaluations in the control,
    4 in the treatment (the second and third are the first's)."""
    import experiments.core.training as training
    from experiments.core.tracking import RunLogger

    calls = []
    real = training.evaluate

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "evaluate", counting)
    settings = RunSettings(
        agent="random", scenario_overrides=SMOKE_SCENARIO, steps=600, eval_interval=100, eval_users=8
    )
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    state = {"iteration": 0, "next_eval": 0}
    training.train(_StepCounter(moves_at), settings, settings.scenario_config(), RunLogger(run_dir), run_dir, state)
    assert len(calls) == (6 if moves_at is None else 4)
    rows = (run_dir / "results.csv").read_text().splitlines()[1:]
    assert len(rows) == 6 and rows[0].split(",")[5:] == rows[2].split(",")[5:]  # the reused figures are the first's
