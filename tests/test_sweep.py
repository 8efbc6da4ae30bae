"""experiments/sweep.py: spaces checked before Ray starts, a 2-trial sweep at smoke sizes on Ray Tune, and
the best config round-tripping through run.py --config."""

from __future__ import annotations

import pandas as pd
import pytest

from experiments.core.flags import build_parser, settings_from_args
from experiments.core.records import read_record
from experiments.core.settings import RunSettings
from experiments.studies.sweeps.tune import SweepSettings, sample_configs, sections

# The end-to-end sweep tunes SB3 PPO: the sweep is the same for any trainable agent, and SB3's trials
# start no Ray processes of their own inside Tune's.
SPACE = """\
algo.learning_rate: {loguniform: [1.0e-4, 1.0e-3]}
model.d_model: {choice: [16, 32]}
scenario.cognitive.magnitude: {uniform: [0.5, 1.5]}
algo.n_epochs: 1
"""


@pytest.mark.parametrize(
    "space, message",
    [
        ("algo.lrr: {uniform: [0.1, 0.2]}", "algo.lrr"),
        ("optim.lr: {uniform: [0.1, 0.2]}", "starting with scenario., model., algo."),
        ("algo.lr: {logunifrom: [1.0e-5, 1.0e-3]}", "a domain is one of loguniform, uniform, randint, choice"),
        ("algo.lr: {uniform: [0.2, 0.1]}", "uniform takes [low, high], low < high"),
        ("algo.lr: {loguniform: [0, 0.1]}", "loguniform takes [low, high], 0 < low < high"),
        ("algo.num_epochs: {randint: [1.5, 3]}", "randint takes [low, high], integers"),
        ("model.d_model: {choice: []}", "choice takes a non-empty list"),
        ("model.d_model: {choice: [30]}", "sample 0 (model.d_model=30): "),  # 30 heads of 4: RunSettings says no
        ("scenario.cognitive.magnitude: {uniform: [-2, -1]}", "cognitive.magnitude"),
        ("[]", "must map at least one field"),
    ],
)
def test_a_bad_space_is_one_line_before_ray_starts(cli, space, message, tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text(space + "\n")
    assert cli("sweep", ["--space", str(path), "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out").exists()  # nothing made, Ray not started


def test_sampled_configs_repeat_with_the_seed_and_become_run_config_sections():
    space = {"algo.lr": {"loguniform": [1e-4, 1e-3]}, "model.d_model": {"choice": [16, 32]}, "algo.num_epochs": 2}
    first, again, other = (sample_configs(space, 4, seed) for seed in (0, 0, 1))
    assert first == again and first != other
    assert all(
        1e-4 <= c["algo.lr"] <= 1e-3 and c["model.d_model"] in (16, 32) and c["algo.num_epochs"] == 2 for c in first
    )
    assert type(first[0]["algo.lr"]) is float and type(first[0]["model.d_model"]) is int  # plain, for YAML
    nested = sections({"algo.lr": 1e-4, "scenario.cognitive.magnitude": 2.0})
    assert nested == {"scenario": {"cognitive": {"magnitude": 2.0}}, "model": {}, "algo": {"lr": 1e-4}}


def test_trials_request_a_gpu_on_cuda_and_a_cpu_per_env_runner():
    space = {"algo.lr": {"uniform": [1e-4, 1e-3]}}
    cpu = SweepSettings(base=RunSettings(device="cpu"), space=space)
    cuda = SweepSettings(base=RunSettings(device="cuda", algo={"num_env_runners": 2}), space=space)
    assert cpu.trial_resources == {"CPU": 1, "GPU": 0} and cuda.trial_resources == {"CPU": 3, "GPU": 1}
    with pytest.raises(ValueError, match="does not train"):
        SweepSettings(base=RunSettings(agent="random"), space=space)


def test_two_trial_smoke_sweep_writes_a_table_and_a_best_config_run_py_takes(cli, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(SPACE)
    out = tmp_path / "sweep"
    argv = ["--agent", "sb3-ppo", "--space", str(space), "--smoke", "--num-samples", "2", "--scheduler", "fifo"]
    assert cli("sweep", argv + ["--num-cpus", "2", "--device", "cpu", "--out", str(out)]) == 0

    table = pd.read_csv(out / "results.csv")
    assert len(table) == 2 and set(table.status) == {"finished"} and set(table["eval"]) == {"final"}
    assert table.return_mean.is_monotonic_decreasing  # best first
    assert "| algo.learning_rate |" in (out / "results.md").read_text()

    # The best trial's run, as its run directory recorded it, is what run.py builds from best.yaml.
    best = table.iloc[0]
    trial = read_record(out / "runs" / best.run_dir.split("/runs/")[1])[0]  # run.json, as the one loader reads it
    assert trial.algo["learning_rate"] == pytest.approx(best["algo.learning_rate"])
    assert trial.model["d_model"] == best["model.d_model"]
    args = build_parser().parse_args(
        ["--agent", "sb3-ppo", "--config", str(out / "best.yaml"), "--smoke", "--device", "cpu"]
    )
    assert settings_from_args(args) == trial  # what run.py builds from it
