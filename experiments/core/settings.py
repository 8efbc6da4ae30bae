"""Run settings: a frozen, validated RunSettings describes a run, and every setting is checked when it is
built, before anything is trained, so a bad value never costs a training run. Also the config file's
sections, the toy sizes of --smoke, the defaults of lifetime scenarios, and the labels that tell runs of
different configurations apart (a run recorded under a scenario that has changed since is another one).

  settings = RunSettings(agent="ppo", scenario="cognitive", steps=100_000, algo={"lr": 3e-4})
  settings = settings_from_config("ppo", "lifetime", "run.yaml", smoke=True)   # what run.py builds
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.encoder import EncoderConfig
from agents.registry import AgentSpec, LifetimeDefaults, get_agent
from envs.config import (
    ScenarioConfig,
    has_calendar,
    is_scenario_file,
    load_overrides,
    make_scenario,
    read_scenario_file,
    scenario_label,
)
from experiments.core.devices import DEVICES
from experiments.core.harness import EVAL_SEED, VALIDATION_SEED
from simulator.params import merge_overrides

CONFIG_SECTIONS = ("scenario", "model", "algo")
# --smoke: the same pipeline at toy sizes (seconds); each agent adds its own `smoke` algo settings.
SMOKE_SCENARIO = {"catalog": {"n_items": 200}, "env": {"history_len": 8, "max_steps": 30}}
SMOKE_MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1}
SMOKE_SIZES = dict(steps=512, eval_users=16, final_eval_users=32, eval_interval=0, checkpoint_every=1)
# Defaults of runs on lifetime scenarios (a calendar: a life is thousands of steps, the history holds
# 128 interactions), sized so that `run.py --agent ppo --scenario lifetime` finishes in 15 minutes on
# 2 CPU cores (README): fewer training steps, two small evaluations during training, 128 final users
# (every agent on a lifetime scenario is evaluated on the same 128 users by default: a neural policy
# decides a few hundred times a second on 2 cores, and a life is about a thousand decisions). Each
# agent adds its own (AgentSpec.lifetime: PPO's warm start on fewer logs, its best snapshot). Flags,
# the config file and --smoke sizes override them.
LIFETIME_RUN_DEFAULTS = dict(steps=49_152, eval_users=32, final_eval_users=128)
LIFETIME_EVALUATIONS = 2  # during training: eval_interval = steps / 2 unless given (or the agent keeps its best)
# EncoderConfig fields read from the env (the rest are the `model:` section's).
_ENV_SIZED = ("n_items", "history_len", "item_feature_dim", "history_feature_dim", "context_dim")


def _check_count(flag: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{flag} must be an integer, got {value!r}")
    if value < low:
        raise ValueError(f"{flag} must be >= {low}, got {value}")


def check_model_overrides(model: Mapping[str, Any]) -> None:
    """Validate the `model:` section (EncoderConfig fields) without building an env."""
    if not isinstance(model, Mapping):
        raise ValueError(f"the model section must be a mapping, got {type(model).__name__}")
    allowed = {f.name for f in dataclasses.fields(EncoderConfig)} - set(_ENV_SIZED)
    unknown = sorted(set(model) - allowed)
    if unknown:
        raise ValueError(f"unknown model config key '{unknown[0]}'; allowed: {', '.join(sorted(allowed))}")
    from agents.model import DEFAULT_MODEL

    EncoderConfig(
        n_items=1, history_len=1, item_feature_dim=1, history_feature_dim=1, context_dim=1, **{**DEFAULT_MODEL, **model}
    )


@dataclass(frozen=True)
class RunSettings:
    """Everything one run depends on; saved as run.json (--resume and --load read it back).

    agent: an agent's name (agents.registry: a registered one, an installed package's, or a module
    path "package.module:attr"); scenario: a preset or a scenario file (envs.config.ScenarioFile; kept
    as an absolute path), with `scenario_overrides` (nested, as envs.make_scenario takes them);
    model: EncoderConfig overrides; algo: the agent's settings dataclass fields; steps: training
    budget in env (user) steps; eval_users: users of each evaluation during training,
    final_eval_users of the final one (seed EVAL_SEED, the same users for every agent);
    eval_interval: env steps between evaluations (0: a tenth of steps); checkpoint_every: training
    iterations between checkpoints; device: where a learner trains ("auto" picks cuda when a GPU is
    visible); ray_address: an existing Ray cluster to join; keep_best: evaluate during training on
    validation users (seed VALIDATION_SEED, not the final evaluation's) and end with the snapshot
    that did best there (saved to `best/` next to `checkpoint/`), not the last. model_defaults: the
    agent's own `model:` defaults (its registry entry's, and on a calendar its lifetime ones) under
    `model`, resolved when None and recorded in run.json: a run keeps the model it was trained with
    when the defaults change (records from before agents had model defaults read as {}).
    """

    agent: str = "ppo"
    scenario: str = "mixed"
    scenario_overrides: Mapping[str, Any] = field(default_factory=dict)
    model: Mapping[str, Any] = field(default_factory=dict)
    algo: Mapping[str, Any] = field(default_factory=dict)
    steps: int = 250_000
    seed: int = 0
    device: str = "auto"
    eval_users: int = 256
    final_eval_users: int = 1024
    eval_interval: int = 0
    checkpoint_every: int = 5
    ray_address: str | None = None
    keep_best: bool = False
    model_defaults: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        spec = get_agent(self.agent)
        if is_scenario_file(self.scenario):  # found again wherever the run goes on (--resume, Ray workers)
            object.__setattr__(self, "scenario", str(read_scenario_file(self.scenario).path))
        scenario_label(self.scenario)  # an unknown scenario fails here
        for name, low in (
            ("steps", 1),
            ("seed", 0),
            ("eval_users", 2),
            ("final_eval_users", 2),
            ("eval_interval", 0),
            ("checkpoint_every", 1),
        ):
            _check_count("--" + name.replace("_", "-"), getattr(self, name), low)
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {self.device!r}")
        if self.ray_address is not None and not isinstance(self.ray_address, str):
            raise ValueError(f"--ray-address must be a string, got {self.ray_address!r}")
        if not isinstance(self.keep_best, bool):
            raise ValueError(f"--keep-best must be true or false, got {self.keep_best!r}")
        if self.keep_best and not spec.trains:
            raise ValueError(f"--keep-best keeps a training run's best snapshot; --agent {self.agent} does not train")
        for name in ("scenario_overrides", "model", "algo"):
            if not isinstance(getattr(self, name), Mapping):
                raise ValueError(f"{name} must be a mapping, got {type(getattr(self, name)).__name__}")
        if self.model_defaults is None:
            defaults = dict(spec.model)
            if has_calendar(self.scenario, self.scenario_overrides):
                defaults.update(spec.lifetime.model)
            object.__setattr__(self, "model_defaults", defaults)
        elif not isinstance(self.model_defaults, Mapping):
            raise ValueError(f"model_defaults must be a mapping, got {type(self.model_defaults).__name__}")
        scenario = self.scenario_config()  # bad overrides fail here, before any work
        params = spec.make_params(self.algo)  # so do bad agent settings
        if hasattr(params, "check_scenario"):  # and settings the scenario cannot take (days without a calendar)
            params.check_scenario(scenario)
        check_model_overrides(self.resolved_model)
        if hasattr(params, "check_model"):  # and encoder settings the agent cannot take
            params.check_model(self.resolved_model)

    # ------------------------------------------------------------------ derived
    @property
    def resolved_model(self) -> dict[str, Any]:
        """The model settings the agent is built with: its defaults, then `model`."""
        return {**self.model_defaults, **self.model}

    @property
    def spec(self) -> AgentSpec:
        return get_agent(self.agent)

    @property
    def scenario_label(self) -> str:
        """What the run is filed and compared under: the preset's name, or the scenario file's label
        (by content: envs.config.ScenarioFile)."""
        return scenario_label(self.scenario)

    @property
    def params(self) -> Any:
        """The agent's validated settings dataclass (None for agents that take none)."""
        return self.spec.make_params(self.algo)

    @property
    def name(self) -> str:
        """The name runs are filed and compared under: a refitting variant is its own agent
        (NAME-retrain every k steps, NAME-retrain-7d every 7 days)."""
        return self.agent + (getattr(self.params, "name_suffix", "") if self.spec.retrains else "")

    @property
    def eval_seed(self) -> int:
        """Whose users the evaluations during training see: the final evaluation's, or with
        keep_best validation users (a snapshot chosen on the final users would flatter itself)."""
        return VALIDATION_SEED if self.keep_best else EVAL_SEED

    @property
    def interval(self) -> int:
        """Env steps between evaluations during training."""
        return self.eval_interval or max(1, self.steps // 10)

    def scenario_config(self) -> ScenarioConfig:
        return make_scenario(self.scenario, self.scenario_overrides)

    def replace(self, **changes: Any) -> RunSettings:
        if {"agent", "scenario", "scenario_overrides"} & set(changes) and "model_defaults" not in changes:
            changes["model_defaults"] = None  # another agent or scenario: its own defaults
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------- run.json
    def to_dict(self) -> dict[str, Any]:
        """Plain settings plus the derived name (what compare and stress read), the scenario as
        resolved today (`scenario_config`: presets change; a run must not be re-read as another) and,
        on a scenario file, its path and content hash (SCENARIO_FILE)."""
        record = dict(
            dataclasses.asdict(self),
            name=self.name,
            trainable=self.spec.trains,
            scenario_config=_plain(self.scenario_config().to_dict()),
        )
        return dict(record, **scenario_file_record(self.scenario))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run.json") -> RunSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        unknown = sorted(set(data) - known - {"name", "trainable", "scenario_config", SCENARIO_FILE})
        if unknown:
            raise ValueError(f"{where}: unknown setting '{unknown[0]}'")
        if values.get("eval_interval") is None:
            values["eval_interval"] = 0
        values.setdefault("model_defaults", {})  # a record from before agents had model defaults
        return cls(**values)


# run.json's record of a scenario file: {"scenario_file": {"path": ..., "sha256": ...}}, absent on presets.
SCENARIO_FILE = "scenario_file"


def scenario_file_record(scenario: str) -> dict[str, Any]:
    """{SCENARIO_FILE: {path, sha256}} of a run on a scenario file; {} on a preset."""
    if not is_scenario_file(scenario):
        return {}
    file = read_scenario_file(scenario)
    return {SCENARIO_FILE: dict(path=str(file.path), sha256=file.sha256)}


def scenario_file_change(record: Mapping[str, Any]) -> str | None:
    """Why the scenario file a run recorded is not the file at its path any more (gone, or another
    content hash); None when it is the same, or the run is on a preset."""
    saved = record.get(SCENARIO_FILE)
    if not isinstance(saved, Mapping):
        return None
    try:
        now = read_scenario_file(saved.get("path", "")).sha256
    except ValueError as err:
        return str(err)
    if now != saved.get("sha256"):
        return (
            f"scenario file {saved['path']} has changed since the run (content hash "
            f"{str(saved.get('sha256'))[:8]}, now {now[:8]})"
        )
    return None


def check_scenario_file(record: Mapping[str, Any], run_dir: str | Path) -> None:
    """--resume and --load: a run on a scenario file goes on only on that file as it was (ValueError)."""
    change = scenario_file_change(record)
    if change is not None:
        raise ValueError(f"{run_dir}: {change}; a run goes on only in the world it started in")


def with_smoke_sizes(settings: RunSettings, **explicit: Any) -> RunSettings:
    """The toy sizes of --smoke under `settings`' own scenario/model/algo overrides; `explicit`
    (flags the user gave) win over the toy sizes."""
    sizes = {**SMOKE_SIZES, **{k: v for k, v in explicit.items() if v is not None}}
    return settings.replace(
        scenario_overrides=merge_overrides(SMOKE_SCENARIO, settings.scenario_overrides),
        model={**SMOKE_MODEL, **settings.model},
        algo={**settings.spec.smoke, **settings.algo},
        **sizes,
    )


def load_config_sections(path: str | Path | None) -> dict[str, dict[str, Any]]:
    """A run config file: optional sections scenario:, model:, algo: (each a mapping)."""
    if path is None:
        return {}
    data = load_overrides(path)
    unknown = sorted(set(data) - set(CONFIG_SECTIONS))
    if unknown:
        raise ValueError(f"unknown section '{unknown[0]}' in {path}; allowed: {', '.join(CONFIG_SECTIONS)}")
    for key, value in data.items():
        if not isinstance(value, dict):
            raise ValueError(f"section '{key}' in {path} must be a mapping, got {type(value).__name__}")
    return data


def _with_lifetime_interval(fields: dict[str, Any], keep: bool, evaluations: int) -> dict[str, Any]:
    """`fields` with eval_interval set to `evaluations` evaluations over the steps (unless `keep`)."""
    if keep:
        return fields
    steps = fields.get("steps", RunSettings.steps)
    return {**fields, "eval_interval": max(1, steps // evaluations) if isinstance(steps, int) else 0}


def settings_from_config(
    agent: str,
    scenario: str,
    config: str | Path | None,
    *,
    smoke: bool = False,
    algo: Mapping[str, Any] | None = None,
    **fields: Any,
) -> RunSettings:
    """RunSettings of a CLI: the config file's sections, `algo` entries from flags on top of its
    algo: section, and the other RunSettings `fields` that were given (None: not given, the
    default); with `smoke`, the toy sizes under them (explicit fields win)."""
    sections = load_config_sections(config)
    given = {k: v for k, v in fields.items() if v is not None}
    run_defaults, algo_defaults, evaluations = {}, {}, LIFETIME_EVALUATIONS
    if resolves_with_calendar(scenario, sections.get("scenario", {})):
        life = _spec(agent).lifetime if _spec(agent) else LifetimeDefaults()
        run_defaults, algo_defaults = LIFETIME_RUN_DEFAULTS, dict(life.algo)
        if life.keep_best_evaluations and not smoke:  # a warm-up longer than toy runs
            run_defaults = {**run_defaults, "keep_best": True}
            algo_defaults = {**algo_defaults, **life.keep_best_algo}
            if given.get("keep_best", True):  # --no-keep-best: the plain budget's evaluations
                evaluations = life.keep_best_evaluations
        if smoke and _spec(agent):  # the toy sizes win over the lifetime defaults
            algo_defaults = {**algo_defaults, **_spec(agent).smoke}
    settings = RunSettings(
        agent=agent,
        scenario=scenario,
        scenario_overrides=sections.get("scenario", {}),
        model=sections.get("model", {}),
        algo={**algo_defaults, **sections.get("algo", {}), **(algo or {})},
        **_with_lifetime_interval({**run_defaults, **given}, "eval_interval" in given or not run_defaults, evaluations),
    )
    sizes = {k: given[k] for k in SMOKE_SIZES if k in given}
    return with_smoke_sizes(settings, **sizes) if smoke else settings


def resolves_with_calendar(scenario: str, overrides: Mapping[str, Any] | None = None) -> bool:
    """Whether the scenario has a calendar; False for one that does not resolve (the settings built
    from it say why, in one line)."""
    try:
        return has_calendar(scenario, overrides)
    except ValueError:
        return False


def _spec(agent: str) -> AgentSpec | None:
    """The agent's entry; None for one that cannot be found (RunSettings says why)."""
    try:
        return get_agent(agent)
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    """`value` as JSON reads it back (tuples become lists), so that records compare equal."""
    return json.loads(json.dumps(value, default=str))


def changed_dynamics(record: Mapping[str, Any]) -> list[str]:
    """The scenario sections (`world.users`, `env`, ...) where the scenario a run recorded in its
    run.json differs from what its preset and overrides resolve to today; [] when they agree or the
    run predates the record."""
    saved = record.get("scenario_config")
    if not isinstance(saved, Mapping) or scenario_file_change(record) is not None:
        return []  # no record, or a scenario file that is not there as it was: its hash is the run's identity
    saved = _with_defaults(_plain(saved), _plain(ScenarioConfig().to_dict()))
    return scenario_differences(saved, RunSettings.from_dict(record).scenario_config())


def _with_defaults(saved: Any, default: Any) -> Any:
    """`saved` (a scenario record) with the fields it lacks taken from `default`, section by section:
    a field added to the config after a run was recorded had its default then, since a new mechanism
    comes in off by default (the run's dynamics are today's with it off)."""
    if not (isinstance(saved, Mapping) and isinstance(default, Mapping)):
        return saved
    missing = {k: v for k, v in default.items() if k not in saved}
    return {**missing, **{k: _with_defaults(v, default.get(k)) for k, v in saved.items()}}


def scenario_differences(a: ScenarioConfig | Mapping[str, Any], b: ScenarioConfig | Mapping[str, Any]) -> list[str]:
    """The sections (`world.users`, `env`, `name`, ...) where two scenarios, as configs or as their
    JSON records, differ; [] when they agree."""
    a, b = (_plain(x.to_dict() if isinstance(x, ScenarioConfig) else x) for x in (a, b))
    changed = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), Mapping) and isinstance(b.get(key), Mapping):
            inner = set(a[key]) | set(b[key])
            changed += [f"{key}.{k}" for k in sorted(inner) if a[key].get(k) != b[key].get(k)]
        elif a.get(key) != b.get(key):
            changed.append(key)
    return changed


def _explicit_algo(agent: str, algo: Mapping[str, Any]) -> dict[str, Any]:
    """`algo` without the entries that equal the agent's own defaults: `critic_warmup_steps: 0`
    written out is the same configuration as left out, so it must get the same label."""
    try:
        own = dataclasses.asdict(get_agent(agent).make_params({}))
    except (KeyError, ValueError, TypeError):  # an agent that no longer exists, or one without settings
        return dict(algo)
    return {k: v for k, v in algo.items() if k not in own or own[k] != v}


def config_label(settings_dict: Mapping[str, Any]) -> str:
    """A short label of everything but the seed that makes runs of one agent and scenario differ
    (scenario overrides, model, algo, steps; where the run or the defaults keep the best snapshot,
    that choice and the evaluations it is made by): runs with different labels are different
    configurations and are never averaged together. "" for the defaults."""
    try:  # the defaults of that agent on that scenario (lifetime scenarios have their own)
        defaults = dataclasses.asdict(settings_from_config(settings_dict["agent"], settings_dict["scenario"], None))
    except (KeyError, ValueError):  # a record of an agent or scenario that no longer exists
        defaults = dataclasses.asdict(RunSettings())
    keys = ("scenario_overrides", "model", "model_defaults", "algo", "steps")
    kept = bool(settings_dict.get("keep_best", False))  # records from before the flag kept the last snapshot
    if kept or defaults["keep_best"]:
        keys += ("keep_best", "eval_interval", "eval_users")
    given = {k: settings_dict.get(k, defaults[k]) for k in keys}
    given["model_defaults"] = settings_dict.get("model_defaults") or {}  # records from before: none
    if "keep_best" in given:
        given["keep_best"] = kept
    agent = settings_dict.get("agent", defaults["agent"])
    given["algo"], defaults["algo"] = (_explicit_algo(agent, a) for a in (given["algo"], defaults["algo"]))
    if all(given[k] == defaults[k] for k in keys):
        return ""
    blob = json.dumps(given, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:6]
