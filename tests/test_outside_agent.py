"""An agent from outside the package (tests/agent_outside.py) and a drift family from outside it
(tests/drift_mood.py, turned on by a scenario file) go through every CLI at smoke sizes; each way a
module path can fail is one line naming it; installed packages register agents through entry points;
scenario files stand wherever a preset name does, recorded by content.

bench.py is left out: it benchmarks the package's own simulator, encoder and PPO trainers, and takes
no --agent a researcher could name (`bench train --agent` chooses between the two PPO trainers).
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from agents import registry
from agents.baselines import LinUCBPolicy, PopularityPolicy
from agents.logs import EpsilonPopularity, collect_logs
from agents.policy import Binder, DatedDeployment, Observer, Scorer, deployment
from agents.registry import AGENTS, AgentSpec, agent_names, get_agent, register_agent
from envs import RecVectorEnv, make_scenario
from envs.config import read_scenario_file, scenario_label
from experiments.core.harness import evaluate
from experiments.core.settings import SCENARIO_FILE, RunSettings

ROOT = Path(__file__).resolve().parents[1]
POLICY, LEARNER = "agent_outside:FreshPopular", "agent_outside:make_learner"
MOOD_SCENARIO = "families: {mood: 'drift_mood:Mood'}\nmood: {enabled: true, amplitude: 2.0}\n"


@pytest.fixture
def agents_registry():
    """The registry as it was, after the test: what a test registers is gone."""
    saved, by_path = dict(AGENTS), dict(registry._BY_PATH)
    yield registry
    AGENTS.clear()
    AGENTS.update(saved)
    registry._BY_PATH.clear()
    registry._BY_PATH.update(by_path)


@pytest.fixture
def mood_file(tmp_path) -> Path:
    path = tmp_path / "mood.yaml"
    path.write_text(MOOD_SCENARIO)
    return path


def one_line_error(capsys) -> str:
    """The one error line a CLI printed (a status line such as "run directory: ..." may come before it)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and err.strip().endswith(errors[0]) and "Traceback" not in err, err
    return errors[0].removeprefix("error: ")


# ------------------------------------------------------------------------------ module paths
def test_a_module_path_is_an_agent_with_its_own_settings():
    fresh, learner, cls = (get_agent(p) for p in (POLICY, LEARNER, "agent_outside:ItemValueLearner"))
    assert fresh.name == POLICY and not fresh.trains and fresh.description.startswith("Serves the most popular")
    assert fresh.make_params({"repeat_penalty": 3.0}).repeat_penalty == 3.0
    assert learner.trains and cls.trains and learner.make_params().num_envs == 32
    with pytest.raises(ValueError, match="unknown config key 'algo.penalty'; allowed: recent, repeat_penalty"):
        fresh.make_params({"penalty": 1.0})
    with pytest.raises(ValueError, match="algo.epsilon must be in"):
        learner.make_params({"epsilon": 2.0})
    spec = get_agent("agent_outside:FRESH_SPEC")  # a whole entry, named by its path
    assert spec.name == "agent_outside:FRESH_SPEC" and spec.smoke == {"recent": 4}
    assert get_agent(POLICY) is fresh  # loaded once


@pytest.mark.parametrize(
    "agent, config, message",
    [
        ("no_such_module:Rec", "", "agent: module 'no_such_module' not found (from 'no_such_module:Rec')"),
        ("agent_outside:Missing", "", "agent: module 'agent_outside' has no attribute 'Missing'"),
        ("agent_outside:NotAPolicy", "", "class NotAPolicy is not a Policy (no act(obs)) nor a TrainableAgent"),
        ("agent_outside:FRESH", "", "not a Policy class, a TrainableAgent class, a factory or an AgentSpec (got an "),
        ("agent_outside:broken", "", "agent 'agent_outside:broken': its factory failed: RuntimeError: no model file"),
        ("agent_outside:returns_a_number", "", "its factory returned a value of type int, not a Policy"),
        ("agent_outside:needs_a_model_path", "", "needs 'model_path', which driftrec cannot give"),
        ("agent_outside:trains_but_says_not", "", "its factory returned a TrainableAgent, but the agent is not"),
        (POLICY, "algo: {penalty: 1.0}\n", "unknown config key 'algo.penalty'; allowed: recent, repeat_penalty"),
        (POLICY, "algo: {recent: 0}\n", "algo.recent must be in"),
        ("nonesuch", "", "unknown agent 'nonesuch'; valid agents: ppo, "),
    ],
)
def test_each_bad_agent_is_one_line_naming_it_and_leaves_no_run(cli, tmp_path, capsys, agent, config, message):
    argv = ["--agent", agent, "--smoke", "--logdir", str(tmp_path / "runs")]
    if config:
        (tmp_path / "run.yaml").write_text(config)
        argv += ["--config", str(tmp_path / "run.yaml")]
    assert cli("run", argv) == 2
    assert message in one_line_error(capsys)
    assert not list(tmp_path.glob("runs/*/*/*/run.json"))  # built before any run, or its directory removed
    if not config:  # the other tools say the same of it
        assert cli("stress", ["--agents", agent, "--smoke", "--out", str(tmp_path / "stress")]) == 2
        assert message in one_line_error(capsys)


# ------------------------------------------------------------------------ the registry
def test_the_built_in_agents_enter_through_register_agent_only():
    """Every built-in entry is one register_agent accepts as it is, and no module writes the registry
    but register_agent (nothing built in goes around it); no agent module imports the factories."""
    assert {"ppo", "sb3-ppo", "random", "sasrec", "oracle-lookahead"} <= set(AGENTS)
    for spec in AGENTS.values():
        assert register_agent(spec) is spec  # the same entry again changes nothing
    writers = set()
    for path in [*ROOT.glob("agents/*.py"), *ROOT.glob("experiments/**/*.py"), *ROOT.glob("envs/*.py")]:
        writers |= {(path.name, where) for where in RegistryWriters.of(ast.parse(path.read_text()))}
    assert writers == {("registry.py", "register_agent")}


class RegistryWriters(ast.NodeVisitor):
    """Where a module writes AGENTS (item assignment, update, setdefault, pop) or imports agents.factory:
    the enclosing function's name ("<module>" at the top level)."""

    def __init__(self) -> None:
        self.scope, self.found = ["<module>"], []

    @classmethod
    def of(cls, tree: ast.AST) -> list[str]:
        visitor = cls()
        visitor.visit(tree)
        return visitor.found

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    def visit_Subscript(self, node: ast.Subscript) -> None:
        if isinstance(node.value, ast.Name) and node.value.id == "AGENTS" and isinstance(node.ctx, ast.Store):
            self.found.append(self.scope[-1])
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (
            isinstance(node.value, ast.Name)
            and node.value.id == "AGENTS"
            and node.attr in ("update", "setdefault", "pop")
        ):
            self.found.append(self.scope[-1])
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "agents.factory":
            self.found.append("imports agents.factory")


def test_register_agent_names_an_agent_for_every_tool_and_refuses_a_second_of_its_name(agents_registry, cli, tmp_path):
    from agent_outside import FreshParams, FreshPopular

    spec = register_agent(AgentSpec("fresh", "fresh popular", FreshPopular, FreshParams, smoke={"recent": 2}))
    assert get_agent("fresh") is spec and "fresh" in agent_names()
    assert cli("run", ["--agent", "fresh", "--smoke", "--logdir", str(tmp_path)]) == 0
    (results,) = tmp_path.glob("mixed/fresh/*/results.csv")
    assert set(pd.read_csv(results).agent) == {"fresh", "random"}
    with pytest.raises(ValueError, match="an agent named 'fresh' is registered already"):
        register_agent(AgentSpec("fresh", "another", FreshPopular))
    with pytest.raises(ValueError, match="without spaces or ':'"):
        register_agent(AgentSpec("my:rec", "a module path is not a name", FreshPopular))


def test_installed_packages_register_agents_through_entry_points(agents_registry, monkeypatch, tmp_path, cli, capsys):
    dist = tmp_path / "site" / "my_recs-0.1.dist-info"  # what pip install leaves for a package declaring them
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: my-recs\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        f"[{registry.ENTRY_POINT_GROUP}]\nfresh-popular = {POLICY}\nbroken-plugin = agent_outside:NotAPolicy\n"
        "gone-plugin = no_such_module:Rec\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert {"fresh-popular", "broken-plugin"} <= set(agent_names())
    assert "fresh-popular" not in AGENTS  # loaded when first asked for, then registered
    assert get_agent("fresh-popular").name == "fresh-popular" and "fresh-popular" in AGENTS
    assert cli("run", ["--agent", "fresh-popular", "--smoke", "--logdir", str(tmp_path / "runs")]) == 0
    for name, message in (
        ("broken-plugin", "class NotAPolicy is not a Policy"),
        ("gone-plugin", "loading it failed: ModuleNotFoundError: No module named 'no_such_module'"),
    ):
        assert cli("run", ["--agent", name, "--smoke", "--logdir", str(tmp_path / "runs")]) == 2
        err = one_line_error(capsys)
        assert err.startswith(f"agent '{name}' (entry point ") and message in err


# ---------------------------------------------------------------------- hooks as protocols
def test_the_optional_hooks_are_protocols_the_harness_reads():
    from agent_outside import FreshParams, FreshPopular

    fresh = FreshPopular(FreshParams())
    assert isinstance(fresh, Scorer) and isinstance(fresh, Binder) and not isinstance(fresh, Observer)
    assert deployment(fresh) == (None, 0.0) and not isinstance(fresh, DatedDeployment)

    class Heard(FreshPopular):
        """observe() makes it an Observer: the harness calls it after every step, with what it adds."""

        def observe(self, obs, actions, rewards, info):
            self.calls = getattr(self, "calls", 0) + 1
            assert {"evaluated", "done", "served", "position"} <= set(info)

    class Undated(FreshPopular):
        serves_from_day, warmup = 5.0, None  # a DatedDeployment without a warm-up serves from day 0

    cfg = make_scenario("stationary", {"catalog": {"n_items": 100}, "env": {"history_len": 8, "max_steps": 10}})
    heard = Heard(FreshParams())
    ev = evaluate(heard, cfg, 8, seed=1)
    assert heard.calls == len(ev.timeline)
    plain = evaluate(FreshPopular(FreshParams()), cfg, 8, seed=1).metrics
    assert evaluate(Undated(FreshParams()), cfg, 8, seed=1).metrics == plain == ev.metrics


def test_logged_data_reaches_the_factories_through_the_run_context():
    cfg = make_scenario("stationary", {"catalog": {"n_items": 100}, "env": {"history_len": 8, "max_steps": 20}})
    logs = collect_logs(cfg, EpsilonPopularity(0.3, 0), 16, 20, seed=7)
    popularity = get_agent("popularity").build(cfg, {}, logs=logs)
    np.testing.assert_array_equal(popularity.item_scores, PopularityPolicy.from_logs(logs, 100).item_scores)
    bandit = get_agent("bandit").build(cfg, {}, logs=logs)  # it starts from what the logs teach
    assert isinstance(bandit, LinUCBPolicy) and bandit.n_updates == int((logs["step"] >= 0).sum())
    assert get_agent("bandit").build(cfg, {}).dim is None  # without logs: nothing learned yet


# ------------------------------------------------------------------------- scenario files
def test_a_scenario_file_extends_a_preset_and_is_known_by_its_content(tmp_path):
    a, b, c = tmp_path / "a.yaml", tmp_path / "b.yml", tmp_path / "c.yaml"
    a.write_text("extends: mixed\n# the tutorial's\ncognitive: {magnitude: 2.0}\nenv: {num_candidates: 10}\n")
    b.write_text("extends: mixed\nenv: {num_candidates: 10}\ncognitive: {magnitude: 2.0}\n")
    c.write_text("extends: mixed\ncognitive: {magnitude: 3.0}\nenv: {num_candidates: 10}\n")
    built = make_scenario(a)
    same = make_scenario("mixed", {"cognitive": {"magnitude": 2.0}, "env": {"num_candidates": 10}})
    assert (built.world, built.env) == (same.world, same.env)
    assert scenario_label(a) == scenario_label(b) == built.name  # by content, not by file name or layout
    assert scenario_label(a).startswith("mixed-") and scenario_label(c) != scenario_label(a)
    assert read_scenario_file(a).sha256 == read_scenario_file(b).sha256
    env = RecVectorEnv(num_envs=2, scenario=str(a), seed=0)  # the envs take it where they take a preset
    assert env.config.env.num_candidates == 10
    for text, message in (
        ("extends: mixd\n", "scenario file {p}: extends 'mixd', which is not a preset; valid presets: stationary"),
        ("cognitive: {magnitud: 2}\n", "scenario file {p}: unknown config key 'cognitive.magnitud'"),
        ("name: 'my world'\n", "scenario file {p}: name must be letters, digits"),
        ("- a list\n", "scenario file {p} must hold a mapping at the top level"),
    ):
        c.write_text(text)
        with pytest.raises(ValueError) as err:
            make_scenario(c)
        assert message.format(p=c) in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="scenario file not found: .*nowhere.yaml"):
        RunSettings(agent="random", scenario=str(tmp_path / "nowhere.yaml"))


def test_runs_record_the_file_resume_refuses_a_changed_one_and_compare_groups_by_content(
    cli, tmp_path, capsys, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # a relative path, as a researcher types it
    Path("one.yaml").write_text(MOOD_SCENARIO)
    Path("two.yaml").write_text("# the same world under another name\n" + MOOD_SCENARIO)
    Path("other.yaml").write_text(MOOD_SCENARIO.replace("2.0", "3.0"))
    for scenario, seed in (("one.yaml", "0"), ("two.yaml", "1"), ("other.yaml", "0")):
        assert cli("run", ["--agent", POLICY, "--scenario", scenario, "--seed", seed, "--smoke"]) == 0
    label, other = scenario_label("one.yaml"), scenario_label("other.yaml")
    assert label.startswith("custom-") and other != label
    record = json.loads(next(Path("runs", label).glob("*/0-*/run.json")).read_text())
    where = str((tmp_path / "one.yaml").resolve())
    assert record["scenario"] == where  # found again from anywhere
    assert record[SCENARIO_FILE] == {"path": where, "sha256": read_scenario_file("one.yaml").sha256}
    assert cli("compare", ["runs", "--out", "report"]) == 0
    table = pd.read_csv("report/comparison.csv")
    returns = table[(table.metric == "return_mean") & (table.agent == POLICY)].set_index("scenario")
    assert set(returns.index) == {label, other} and returns.seeds[label] == 2  # two files, one world
    # A training run on a file: --resume goes on while the file is unchanged, and refuses it changed.
    argv = ["--agent", LEARNER, "--scenario", "one.yaml", "--smoke", "--logdir", "train"]
    assert cli("run", argv) == 0
    (run_dir,) = Path("train").glob("*/*/*")
    assert cli("run", ["--resume", str(run_dir), "--steps", "1024"]) == 0
    Path("one.yaml").write_text(MOOD_SCENARIO.replace("2.0", "2.5"))
    capsys.readouterr()
    assert cli("run", ["--resume", str(run_dir), "--steps", "2048"]) == 2
    assert "one.yaml has changed since the run (content hash " in one_line_error(capsys)


# -------------------------------------------------------------------------------- every CLI
# The outside agent on a scenario file that turns the outside family on, through each tool at smoke sizes.
def test_run_and_compare_take_the_outside_policy_and_trainable_agent(cli, tmp_path, mood_file):
    for agent in (POLICY, LEARNER):
        argv = ["--agent", agent, "--scenario", str(mood_file), "--smoke", "--logdir", str(tmp_path / "runs")]
        assert cli("run", argv) == 0
    assert cli("compare", [str(tmp_path / "runs"), "--out", str(tmp_path / "compare")]) == 0
    compared = pd.read_csv(tmp_path / "compare" / "comparison.csv")
    assert {POLICY, LEARNER} <= set(compared.agent) and set(compared.scenario) == {scenario_label(mood_file)}
    (results,) = (tmp_path / "runs").glob(f"*/{LEARNER}/*/results.csv")
    final = pd.read_csv(results).set_index("phase").return_mean
    assert final["final"] > final["baseline"]  # it learned something: above random on the same users


def test_stress_takes_the_outside_agents_on_the_outside_family(cli, tmp_path, mood_file):
    argv = ["--agents", POLICY, LEARNER, "--train-scenario", str(mood_file), "--families", "mood"]
    argv += ["--magnitudes", "0", "2", "--seeds", "0", "--reference", "oracle-session", "--smoke"]
    assert cli("stress", [*argv, "--out", str(tmp_path / "stress")]) == 0
    grid = pd.read_csv(tmp_path / "stress" / "grid.csv")
    assert {POLICY, LEARNER} <= set(grid.agent) and set(grid.family) == {"none", "mood"}


def test_validity_takes_the_outside_agent_in_its_history_ablation(cli, tmp_path, mood_file):
    argv = ["--presets", str(mood_file), "--history-agents", POLICY, "--history-presets", str(mood_file), "--smoke"]
    assert cli("validity", [*argv, "--users", "16", "--seeds", "0", "--out", str(tmp_path / "v")]) in (0, 1)
    history = pd.read_csv(tmp_path / "v" / "history.csv")
    assert set(history.agent) == {POLICY} and set(history.history_len) == {1, 8}
    assert set(pd.read_csv(tmp_path / "v" / "drift.csv").preset) == {str(mood_file)}


def test_offline_ranks_and_estimates_the_outside_policy(cli, tmp_path, mood_file):
    argv = ["--scenario", str(mood_file), "--agents", "random", POLICY, "oracle-session", "--smoke", "--seeds", "0"]
    assert cli("offline", [*argv, "--out", str(tmp_path / "offline")]) == 0
    ranking, ope = (pd.read_csv(tmp_path / "offline" / f"{name}.csv") for name in ("ranking", "ope"))
    assert POLICY in set(ranking.agent) and POLICY in set(ope.agent)  # it scores candidates: ranked, estimated
    assert "oracle-session" not in set(ranking.agent) | set(ope.agent)  # it reads the true state


def test_sweep_tunes_the_outside_trainable_agent(cli, tmp_path, mood_file, monkeypatch):
    """Tune's trials run in Ray workers: they find the researcher's modules on PYTHONPATH (or in the
    directory the driver started Ray from), as a researcher's folder is found."""
    import ray

    ray.shutdown()  # a Ray started by an earlier test would hold workers without this folder on their path
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]))
    (tmp_path / "space.yaml").write_text("algo.epsilon: {uniform: [0.1, 0.3]}\n")
    argv = ["--agent", LEARNER, "--scenario", str(mood_file), "--space", str(tmp_path / "space.yaml"), "--smoke"]
    argv += ["--num-samples", "1", "--scheduler", "fifo", "--device", "cpu", "--out", str(tmp_path / "sweep")]
    try:
        assert cli("sweep", argv) == 0
    finally:
        ray.shutdown()
    assert pd.read_csv(tmp_path / "sweep" / "results.csv").status.tolist() == ["finished"]
