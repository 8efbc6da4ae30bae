"""A drift family defined outside the package (tests/drift_mood.py, a mood that swings with the time
of day) goes everywhere a built-in one goes: scenario files, the envs, the oracles, the stress test's
magnitude axis and the validity report; a module path that fails is one line naming it."""

from __future__ import annotations

import pickle
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from drift_mood import MOOD, Mood, MoodParams

import envs
from agents.oracles import LookaheadOracle, LookaheadParams, MyopicOracle
from envs import RecEnv, RecVectorEnv, make_scenario
from experiments.core.harness import evaluate
from simulator import DriftFamily, FamilyState, ShockParams, World, WorldConfig, families, register_family

TINY = {"catalog": {"n_items": 100}, "env": {"num_candidates": 8, "history_len": 8, "max_steps": 20}}
PATH = "drift_mood:Mood"


def mood_on(extra: dict | None = None, path: str = PATH, **mood) -> dict:
    """Overrides that name the family by its module path and turn it on (a scenario file's content)."""
    return {**TINY, "families": {"mood": path}, "mood": {"enabled": True, **mood}, **(extra or {})}


@pytest.fixture
def registry(monkeypatch):
    """A private copy of the registry: what a test registers is gone after it."""
    monkeypatch.setattr(families, "_REGISTRY", dict(families._REGISTRY))
    return families


# --------------------------------------------------------------------------- config
def test_a_scenario_names_the_family_by_module_path_and_sets_it_by_name():
    cfg = make_scenario("cognitive", mood_on(amplitude=2.0))
    assert cfg.world.family_names == ("shock", "cognitive", "social", "seasonal", "mood")  # hook order
    assert cfg.world.mood == MoodParams(enabled=True, amplitude=2.0) == cfg.world.params_of("mood")
    assert cfg.world.cognitive.enabled  # the preset's own families as before
    assert cfg.to_dict()["world"]["mood"]["amplitude"] == 2.0
    # Only the scenario that names it has it: nothing was registered.
    assert "mood" not in make_scenario("cognitive").world.family_names
    with pytest.raises(ValueError, match="unknown config key 'mood'; allowed: .*env, families"):
        make_scenario("cognitive", {"mood": {"enabled": True}})
    # Through a Ray worker (pickled), the family is the same family.
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_registering_puts_the_family_in_every_config_and_refuses_a_second_of_one_name(registry):
    register_family(MOOD)
    register_family(MOOD)  # the same family again: nothing changes
    assert registry.family_names()[-1] == "mood" and registry.get_family("mood") is MOOD
    assert make_scenario("stationary", {"mood": {"enabled": True}}).world.mood.enabled
    assert WorldConfig().mood == MoodParams()  # off by default

    class OtherMood(Mood):
        pass

    with pytest.raises(ValueError, match="a drift family named 'mood' is registered already"):
        register_family(OtherMood())

    class Shock(DriftFamily):
        name, params = "shock", ShockParams

    with pytest.raises(ValueError, match="a drift family named 'shock' is registered already"):
        register_family(Shock())
    with pytest.raises(ValueError, match="families.mood: a drift family named 'mood' is registered already"):
        make_scenario("stationary", {"families": {"mood": "test_outside_family:OtherMoodAtTop"}})


class OtherMoodAtTop(Mood):
    """Another family named mood, for the scenario path above."""


class NotAFamily:
    name = "mood"


class Broken(Mood):
    def __init__(self) -> None:
        raise RuntimeError("no mood today")


@pytest.mark.parametrize(
    "path, mood, message",
    [
        ("no_such_module:Mood", {}, "families.mood: module 'no_such_module' not found (from 'no_such_module:Mood')"),
        (
            "drift_mood:Moody",
            {},
            "families.mood: module 'drift_mood' has no attribute 'Moody' (from 'drift_mood:Moody')",
        ),
        ("drift_mood", {}, "families.mood: 'drift_mood' is not a module path 'package.module:attr'"),
        ("test_outside_family:NotAFamily", {}, "families.mood: 'test_outside_family:NotAFamily' is not a DriftFamily"),
        ("drift_mood:MoodParams", {}, "families.mood: 'drift_mood:MoodParams' is not a DriftFamily"),
        ("test_outside_family:Broken", {}, "families.mood: 'test_outside_family:Broken' could not be built"),
        (PATH, {"amplitude": -1.0}, "mood.amplitude must be in [0, 10], got -1.0"),
        (PATH, {"amplitud": 1.0}, "unknown config key 'mood.amplitud'"),
        (PATH, {"topic": 99}, "mood.topic must be < catalog.n_topics=10, got 99"),
    ],
)
def test_a_module_path_that_fails_is_one_line_naming_it(path, mood, message):
    with pytest.raises(ValueError) as err:
        make_scenario("stationary", mood_on(path=path, **mood))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_family_listed_under_another_name_is_refused():
    with pytest.raises(ValueError, match="families.weather: 'drift_mood:Mood' is the family 'mood'"):
        make_scenario("stationary", {"families": {"weather": PATH}})
    with pytest.raises(ValueError, match="families.shock: a drift family named 'shock' is registered already"):
        make_scenario("stationary", {"families": {"shock": "test_outside_family:ShockImpostor"}})


class ShockImpostor(DriftFamily):
    name, params = "shock", ShockParams


# ------------------------------------------------------------------- the dynamics
def test_the_mood_moves_fit_and_choices_exactly_as_its_formula_says():
    """Treatment against control on common random numbers: the same users (the mood draws from its
    own stream), the same noise, the same slates; the fit differs by the mood's term, and a user
    whose mood favours an item clicks it whenever the control user does (and some more), as long
    as the two users' satisfaction has not parted."""
    on = World(make_scenario("stationary", mood_on(amplitude=3.0)).world, 256, seed=1)
    off = World(make_scenario("stationary", mood_on(amplitude=3.0, enabled=False)).world, 256, seed=1)
    np.testing.assert_array_equal(on.state.interest, off.state.interest)
    phase = on.state.drift["mood"].phase
    assert phase.std() > 1.0
    rng = np.random.default_rng(0)
    more = fewer = 0
    for _ in range(4):
        slates = rng.integers(0, on.catalog.n_initial, size=(256, 1))
        swing = np.sin(2 * np.pi * on.calendar / 24.0 + phase)
        term = 3.0 * swing[:, None] * on.catalog.topics[slates][..., 0]
        np.testing.assert_allclose(on.slate_fit(slates) - off.slate_fit(slates), term, atol=1e-5)
        same = on.state.satisfaction == off.state.satisfaction
        r_on, r_off = on.step(slates), off.step(slates)
        up, down = same & (term[:, 0] > 0), same & (term[:, 0] < 0)
        assert np.all(r_on.clicked[up] >= r_off.clicked[up]) and np.all(r_on.clicked[down] <= r_off.clicked[down])
        more += int((r_on.clicked & ~r_off.clicked)[up].sum())
        fewer += int((r_off.clicked & ~r_on.clicked)[down].sum())
    assert more > 0 and fewer > 0
    # New users are the same users on and off, and the same as in a world without the family.
    plain = World(make_scenario("stationary", TINY).world, 256, seed=1)
    for world in (on, off, plain):
        world.reset_users(np.arange(256) % 3 == 0)
    np.testing.assert_array_equal(on.state.interest, off.state.interest)
    np.testing.assert_array_equal(on.state.interest, plain.state.interest)
    np.testing.assert_array_equal(on.state.drift["mood"].phase, off.state.drift["mood"].phase)
    # Tiles carry the family's state.
    np.testing.assert_array_equal(on.tile(3).state.drift["mood"].phase, np.repeat(on.state.drift["mood"].phase, 3))


def test_save_and_load_carry_the_familys_state_and_stream(tmp_path):
    cfg = make_scenario("stationary", mood_on()).world
    w = World(cfg, 8, seed=0)
    w.reset_users(np.arange(8) < 4)
    w.save(tmp_path / "w.npz")
    other = World(cfg, 8, seed=5)
    other.load(tmp_path / "w.npz")
    np.testing.assert_array_equal(other.state.drift["mood"].phase, w.state.drift["mood"].phase)
    for world in (w, other):  # new users after the load: the family's stream went on where it was
        world.reset_users(np.arange(8) >= 4)
    np.testing.assert_array_equal(other.state.drift["mood"].phase, w.state.drift["mood"].phase)
    with pytest.raises(ValueError, match="saved state lacks mood.depth"):
        World(make_scenario("stationary", mood_on(path="test_outside_family:Moodier")).world, 8).load(
            tmp_path / "w.npz"
        )


@dataclass
class MoodierState(FamilyState):
    phase: np.ndarray
    depth: np.ndarray


class Moodier(Mood):
    """The mood with one more array: a save without it is refused by name."""

    def new_state(self, world, n_users, rng):
        return MoodierState(phase=np.zeros(n_users, np.float32), depth=np.zeros(n_users, np.float32))


def test_a_family_that_is_off_moves_no_number_of_the_others():
    """The mood listed but off (as in a stress test's calm regime): every step as without it."""
    worlds = [World(make_scenario("mixed", o).world, 32, seed=2) for o in (TINY, mood_on(enabled=False))]
    rng = np.random.default_rng(0)
    for _ in range(30):
        slates = rng.integers(0, worlds[0].catalog.n_items, size=(32, 2))
        a, b = (w.step(slates) for w in worlds)
        np.testing.assert_array_equal(a.watch_time, b.watch_time)
        for w in worlds:
            w.reset_users(a.terminated)
    truth = [w.ground_truth() for w in worlds]
    for k in truth[0]:
        np.testing.assert_array_equal(truth[0][k], truth[1][k], err_msg=k)


def test_the_envs_run_the_family(tmp_path):
    overrides = mood_on(amplitude=2.0)
    venv = RecVectorEnv(num_envs=4, scenario="stationary", overrides=overrides, seed=0)
    venv.reset(seed=0)
    for _ in range(5):
        venv.step(np.zeros(4, dtype=np.int64))
    assert venv.world.state.drift["mood"].phase.any()
    env = RecEnv("stationary", overrides=overrides, seed=0)
    env.reset(seed=0)
    env.step(0)
    assert env.unwrapped.core.world.config.mood.amplitude == 2.0
    made = gym.make(envs.ENV_ID, scenario="stationary", overrides=overrides)
    made.reset(seed=0)
    made.step(0)
    assert made.unwrapped.core.world.config.mood.enabled
    # A scenario file names it as it names the built-in families.
    yaml = tmp_path / "mood.yaml"
    yaml.write_text("families: {mood: 'drift_mood:Mood'}\nmood: {enabled: true, period: 6}\n")
    assert make_scenario("stationary", config_file=yaml).world.mood.period == 6.0


def test_the_oracles_plan_with_the_family():
    """The oracles score with the true simulator, mood included: the myopic oracle serves the mood's
    topic more to users in a good mood than it does with the mood off (same users, same candidates),
    less to users in a bad one; the lookahead oracle's rollouts tile the family's state."""
    cfgs = {m: make_scenario("stationary", mood_on(amplitude=4.0, enabled=m)) for m in (True, False)}
    shares = {}
    for m, cfg in cfgs.items():
        env = RecVectorEnv(num_envs=256, scenario=cfg, seed=3)
        obs, _ = env.reset(seed=3)
        oracle = MyopicOracle()
        oracle.bind(env)
        picked = obs["candidate_items"][np.arange(256), oracle.act(obs)]
        shares[m] = env.world.catalog.topics[picked, 0]
        if m:
            world = env.world
            swing = MOOD.swing(world, world.state)
    up, down = swing > 0.5, swing < -0.5
    assert shares[True][up].mean() > shares[False][up].mean() + 0.05
    assert shares[True][down].mean() < shares[False][down].mean() - 0.05
    look = LookaheadOracle(LookaheadParams(top=2, rollouts=2, horizon=4), seed=0)
    env = RecVectorEnv(num_envs=4, scenario=cfgs[True], seed=0)
    env.reset(seed=0)
    look.bind(env)
    sim = env.core.tile(4, seed=1, noise_groups=2)
    np.testing.assert_array_equal(
        sim.world.state.drift["mood"].phase, np.repeat(env.world.state.drift["mood"].phase, 4)
    )
    returns = {
        m: evaluate(LookaheadOracle(look.params, seed=0), cfg, 8, seed=1).metrics["return_mean"]
        for m, cfg in cfgs.items()
    }
    assert returns[True] != returns[False]


# ------------------------------------------------------------- stress and validity
def test_stress_runs_the_family_on_its_magnitude_axis(tmp_path, capsys, cli):
    config = tmp_path / "stress.yaml"
    config.write_text("scenario:\n  families: {mood: 'drift_mood:Mood'}\n  mood: {amplitude: 2.0}\n")
    common = ["--smoke", "--config", str(config), "--agents", "bandit", "--seeds", "0", "--reference", "oracle-session"]
    argv = common + ["--families", "mood", "--magnitudes", "0", "1", "2", "--out", str(tmp_path / "out")]
    assert cli("stress", argv) == 0
    grid = pd.read_csv(tmp_path / "out" / "grid.csv")
    mood = grid[grid.family == "mood"]
    assert sorted(mood.magnitude.unique()) == [1.0, 2.0]  # magnitude 0 is the training regime (no mood)
    assert set(mood.agent) == {"bandit", "oracle-session"}
    calm = grid[grid.family == "none"].set_index("agent").return_mean
    moody = mood[mood.magnitude == 2.0].set_index("agent").return_mean.reindex(calm.index)
    assert not np.allclose(moody, calm)
    # Without the scenario entry, the family is unknown; a bad module path is one line.
    assert cli("stress", ["--families", "mood", "--out", str(tmp_path / "a")]) == 2
    assert "unknown drift family 'mood'; valid families: shock, cognitive, social, seasonal" in capsys.readouterr().err
    config.write_text("scenario:\n  families: {mood: 'drift_mood:Moody'}\n")
    assert cli("stress", common + ["--families", "mood", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == "error: families.mood: module 'drift_mood' has no attribute 'Moody' (from 'drift_mood:Moody')"


def test_validity_reports_on_a_scenario_that_turns_the_family_on(tmp_path, capsys, cli):
    scenario = tmp_path / "mood.yaml"  # a scenario file stands where a preset name does
    scenario.write_text(f"families: {{mood: '{PATH}'}}\nmood: {{enabled: true, amplitude: 2.0}}\n")
    out = tmp_path / "validity"
    argv = ["--smoke", "--presets", str(scenario), "--history-agents", "--users", "16", "--seeds", "0"]
    assert cli("validity", [*argv, "--out", str(out)]) in (0, 1)  # gates may fail at toy sizes: the report is checked
    drift = pd.read_csv(out / "drift.csv")
    assert set(drift.preset) == {str(scenario)} and sorted(drift.magnitude.unique()) == [0.0, 1.0, 2.0]
    ratio = drift.groupby("magnitude").ratio.mean()
    assert ratio[0.0] == 1.0 and ratio[2.0] < 1.0  # a planner with the mood of the episode's start falls short
    gates = pd.read_csv(out / "gates.csv")
    assert "drift: shortfall grows with magnitude" in set(gates.name[gates["where"] == str(scenario)])
    assert "mood.yaml" in capsys.readouterr().out
