"""The runs library: typed run settings, the training loop with checkpoints, the final evaluation,
restoring a trained policy, and fanning runs out over Ray.

Entry points (run.py, stress.py) are thin command-line front ends over this module. A run is
described by a frozen, validated RunSettings: every setting is checked when it is built, before
anything is trained, so a bad value never costs a training run.

  settings = RunSettings(agent="ppo", scenario="cognitive", steps=100_000, algo={"lr": 3e-4})
  run_dir, metrics = run_one(settings, "runs")
  settings, policy = restore_policy(run_dir)          # the trained greedy policy, on CPU

A run writes runs/<scenario>/<name>/<seed>-<time>/: run.json (the settings), TensorBoard events
(train/* and eval/* against environment steps), results.csv, episodes.csv, timeline.csv and
checkpoint/ (trainable agents).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agents.encoder import EncoderConfig
from agents.policy import RandomPolicy
from agents.registry import AGENTS, AgentSpec, get_agent
from envs.config import PRESETS, ScenarioConfig, has_calendar, load_overrides, make_scenario
from experiments.core.harness import EVAL_SEED, VALIDATION_SEED, evaluate
from experiments.core.tracking import EVAL_TAGS, RunLogger, new_run_dir
from simulator.params import merge_overrides

CONFIG_SECTIONS = ("scenario", "model", "algo")
DEVICES = ("auto", "cpu", "cuda")
# --smoke: the same pipeline at toy sizes (seconds); each agent adds its own `smoke` algo settings.
SMOKE_SCENARIO = {"catalog": {"n_items": 200}, "env": {"history_len": 8, "max_steps": 30}}
SMOKE_MODEL = {"d_model": 16, "n_layers": 1, "n_heads": 2, "ff_mult": 1}
SMOKE_SIZES = dict(steps=512, eval_users=16, final_eval_users=32, eval_interval=0, checkpoint_every=1)
# Defaults of runs on lifetime scenarios (a calendar: a life is thousands of steps, the history holds
# 128 interactions), sized so that `run.py --agent ppo --scenario lifetime` finishes in 15 minutes on
# 2 CPU cores (README): fewer training steps, two small evaluations during training, 128 final users
# (every agent on a lifetime scenario is evaluated on the same 128 users by default: a neural policy
# decides a few hundred times a second on 2 cores, and a life is about a thousand decisions), and a
# PPO warm start on fewer logs. Flags, the config file and --smoke sizes override them.
LIFETIME_RUN_DEFAULTS = dict(steps=49_152, eval_users=32, final_eval_users=128)
LIFETIME_EVALUATIONS = 2  # during training: eval_interval = steps / 2 unless given
LIFETIME_ALGO_DEFAULTS = {"ppo": dict(pretrain_epochs=1, log_users=64)}
# run.py's (and sweep.py's) lifetime PPO on top of that budget. PPO on lifetimes is unstable: the
# snapshot a run stops at decides its figure (docs/lifetime). So by default only its critic learns
# for the first steps (the warm-started policy does not move on a fresh critic's advantages), and
# the run ends with its best snapshot on validation users, evaluated `evaluations` times over the
# steps (--no-keep-best: the last snapshot, LIFETIME_EVALUATIONS evaluations). stress.py's temporal
# test trains the budget alone, as its report (docs/stress/lifetime) measured.
LIFETIME_BEST_SNAPSHOT = {"ppo": dict(evaluations=6, algo=dict(critic_warmup_steps=16_384))}
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

    agent: a name in agents.registry.AGENTS; scenario: a preset, with `scenario_overrides`
    (nested, as envs.make_scenario takes them); model: EncoderConfig overrides; algo: the agent's
    settings dataclass fields; steps: training budget in env (user) steps; eval_users: users of
    each evaluation during training, final_eval_users of the final one (seed EVAL_SEED, the same
    users for every agent); eval_interval: env steps between evaluations (0: a tenth of steps);
    checkpoint_every: training iterations between checkpoints; device: where a learner trains
    ("auto" picks cuda when a GPU is visible); ray_address: an existing Ray cluster to join;
    keep_best: evaluate during training on validation users (seed VALIDATION_SEED, not the final
    evaluation's) and end with the snapshot that did best there (saved to `best/` next to
    `checkpoint/`), not the last.
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

    def __post_init__(self) -> None:
        spec = get_agent(self.agent)
        if self.scenario not in PRESETS:
            raise ValueError(f"unknown scenario '{self.scenario}'; valid scenarios: {', '.join(PRESETS)}")
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
        scenario = self.scenario_config()  # bad overrides fail here, before any work
        params = spec.make_params(self.algo)  # so do bad agent settings
        if hasattr(params, "check_scenario"):  # and settings the scenario cannot take (days without a calendar)
            params.check_scenario(scenario)
        check_model_overrides(self.model)

    # ------------------------------------------------------------------ derived
    @property
    def spec(self) -> AgentSpec:
        return get_agent(self.agent)

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
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------- run.json
    def to_dict(self) -> dict[str, Any]:
        """Plain settings plus the derived name (what compare and stress read) and the scenario as
        resolved today (`scenario_config`: presets change; a run must not be re-read as another)."""
        return dict(
            dataclasses.asdict(self),
            name=self.name,
            trainable=self.spec.trains,
            scenario_config=_plain(self.scenario_config().to_dict()),
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "run.json") -> RunSettings:
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        unknown = sorted(set(data) - known - {"name", "trainable", "scenario_config"})
        if unknown:
            raise ValueError(f"{where}: unknown setting '{unknown[0]}'")
        if values.get("eval_interval") is None:
            values["eval_interval"] = 0
        return cls(**values)


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
    if scenario in PRESETS and has_calendar(scenario, sections.get("scenario", {})):
        run_defaults, algo_defaults = LIFETIME_RUN_DEFAULTS, LIFETIME_ALGO_DEFAULTS.get(agent, {})
        best = LIFETIME_BEST_SNAPSHOT.get(agent) if not smoke else None  # a warm-up longer than toy runs
        if best:
            run_defaults = {**run_defaults, "keep_best": True}
            algo_defaults = {**algo_defaults, **best["algo"]}
            if given.get("keep_best", True):  # --no-keep-best: the plain budget's evaluations
                evaluations = best["evaluations"]
        if smoke and agent in AGENTS:  # the toy sizes win over the lifetime defaults
            algo_defaults = {**algo_defaults, **get_agent(agent).smoke}
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


# ------------------------------------------------------------------------- files
def writable_dir(path: str | Path, flag: str) -> Path:
    """`path` as a directory this process can write into (created when missing); else a ValueError
    naming the flag and the reason, before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {path} cannot be written: {err.strerror or err}") from None
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`; a missing, truncated or foreign file is a ValueError naming it."""
    if not path.is_file():
        raise ValueError(f"no {what} at {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): a truncated or corrupted {what}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not the JSON object a {what} is")
    return data


STATUS_FILE = "status.json"  # running / finished / failed / interrupted, with the reason


def write_status(run_dir: Path, status: str, **details: Any) -> None:
    """Mark a run directory (atomically: a kill mid-write leaves the previous status)."""
    tmp = run_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(dict(status=status, time=time.strftime("%Y-%m-%d %H:%M:%S"), **details)))
    os.replace(tmp, run_dir / STATUS_FILE)


def run_status(run_dir: str | Path) -> str:
    """The status a run directory was last marked with ('unknown' for runs older than the marks)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        return str(json.loads(path.read_text()).get("status", "unknown"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return "unknown"


def _plain(value: Any) -> Any:
    """`value` as JSON reads it back (tuples become lists), so that records compare equal."""
    return json.loads(json.dumps(value, default=str))


def changed_dynamics(record: Mapping[str, Any]) -> list[str]:
    """The scenario sections (`world.users`, `env`, ...) where the scenario a run recorded in its
    run.json differs from what its preset and overrides resolve to today; [] when they agree or the
    run predates the record."""
    saved = record.get("scenario_config")
    if not isinstance(saved, Mapping):
        return []
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
    keys = ("scenario_overrides", "model", "algo", "steps")
    kept = bool(settings_dict.get("keep_best", False))  # records from before the flag kept the last snapshot
    if kept or defaults["keep_best"]:
        keys += ("keep_best", "eval_interval", "eval_users")
    given = {k: settings_dict.get(k, defaults[k]) for k in keys}
    if "keep_best" in given:
        given["keep_best"] = kept
    agent = settings_dict.get("agent", defaults["agent"])
    given["algo"], defaults["algo"] = (_explicit_algo(agent, a) for a in (given["algo"], defaults["algo"]))
    if all(given[k] == defaults[k] for k in keys):
        return ""
    blob = json.dumps(given, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:6]


def truncate_results(run_dir: Path, env_steps: int) -> None:
    """On resume: drop the rows results.csv gained after the checkpoint (training evaluations past
    its step count, and any final evaluation), so that the resumed run appends to what the
    checkpoint had seen, never twice."""
    path = run_dir / "results.csv"
    if not path.is_file():
        return
    import pandas as pd

    try:
        rows = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise ValueError(f"{path} is corrupted: cannot resume a run whose results cannot be read") from None
    keep = (rows.get("phase") == "train") & (rows.get("env_steps", 0) <= env_steps)
    tmp = path.with_name(path.name + ".tmp")
    rows[keep].to_csv(tmp, index=False)
    os.replace(tmp, path)


# --------------------------------------------------------------------- stop signals
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(Exception):
    """Training stopped on a signal (Ctrl-C, a scheduler's SIGTERM or SIGHUP) after checkpointing."""

    def __init__(self, signum: int, run_dir: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.run_dir = signum, run_dir


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP only ask the training loop to stop: it finishes the
    iteration under way, checkpoints and raises Interrupted. The previous handlers come back after."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            print(f"\n{signal.Signals(signum).name}: stopping after this iteration (checkpointing)", file=sys.stderr)
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


# ------------------------------------------------------------------------- devices
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str) -> str:
    """'cpu' or 'cuda'. An explicit cuda without a GPU is an error, never a quiet fall back to CPU;
    'auto' says which it picked when it picks the CPU."""
    if device not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not cuda_available():
        raise ValueError("--device cuda was given but no CUDA GPU is visible to torch")
    if device == "auto":
        if cuda_available():
            return "cuda"
        print("device auto: no CUDA GPU visible, training on the CPU", file=sys.stderr)
        return "cpu"
    return device


# --------------------------------------------------------------------------- training
class Progress:
    """One status line: steps, recent training return, steps/s, time left."""

    def __init__(self, total: int, start_steps: int = 0) -> None:
        self.total, self.start_steps = total, start_steps
        self.start, self.tty = time.perf_counter(), sys.stderr.isatty()
        self.first: tuple[int, float] | None = None  # (steps, time) at the first update

    def update(self, steps: int, metrics: Mapping[str, float], note: str = "") -> None:
        now = time.perf_counter()
        elapsed = now - self.start
        frac = min(1.0, steps / self.total)
        # Time left from the iterations since the first one: a warm start before it is no guide.
        if self.first is None:
            self.first = (steps, now)
        done, seconds = steps - self.first[0], now - self.first[1]
        rate = done / seconds if done > 0 and seconds > 0 else (steps - self.start_steps) / max(elapsed, 1e-9)
        left = (self.total - steps) / rate if rate > 0 else float("nan")
        line = (
            f"[{'#' * int(frac * 24):<24}] {steps:>9,d}/{self.total:,d} steps  "
            f"return {metrics.get('episode_return_mean', float('nan')):6.1f}  "
            f"{metrics.get('env_steps_per_s', float('nan')):6.0f} steps/s  {elapsed:6.0f}s  "
            f"~{max(left, 0.0):5.0f}s left {note}"
        )
        print(("\r" + line) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def status(self, text: str) -> None:
        """A line of its own for what the run does besides iterating (a warm start, an evaluation)."""
        elapsed = time.perf_counter() - self.start
        line = f"{text}  ({elapsed:.0f}s)"
        print(("\r" + line.ljust(100)) if self.tty else line, end="" if self.tty else "\n", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def save_checkpoint(agent: Any, path: Path, state: Mapping[str, Any]) -> None:
    """Write to a temporary directory, then swap it in: a kill mid-save keeps the previous checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    agent.save(tmp)
    (tmp / "state.json").write_text(json.dumps(dict(state, env_steps=agent.env_steps)))
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


class TrainingObserver:
    """What the training loop tells an onlooker (the training benchmark's clocks, a sweep's reports to
    Ray Tune); every hook is a no-op here. Hooks run in the loop: keep them cheap."""

    def on_start(self, run_dir: Path, env_steps: int) -> None:
        """Training of the run in `run_dir` starts (before the first iteration, and so before a warm start)."""

    def on_iteration(self, env_steps: int, metrics: Mapping[str, float]) -> None:
        """An iteration ended: the agent's train_iteration() scalars."""

    def on_evaluation(self, env_steps: int, metrics: Mapping[str, float], seconds: float) -> None:
        """An evaluation during training ended (the harness's metrics; `seconds` it took)."""


def train(
    agent: Any,
    settings: RunSettings,
    scenario: ScenarioConfig,
    logger: RunLogger,
    run_dir: Path,
    state: dict[str, Any],
    observer: TrainingObserver | None = None,
) -> None:
    """The training loop: iterate, log train/*, evaluate on schedule, checkpoint."""
    observer = observer or TrainingObserver()
    progress = Progress(settings.steps, agent.env_steps)
    ckpt = run_dir / "checkpoint"
    observer.on_start(run_dir, agent.env_steps)
    if getattr(agent, "warm_start_pending", False):  # minutes on lifetimes: say what the wait is
        progress.status(f"warm start: {agent.warm_start_pending}")
    with StopSignals() as stop:
        while agent.env_steps < settings.steps:
            metrics = agent.train_iteration()
            state["iteration"] += 1
            steps = agent.env_steps
            logger.scalars("train", metrics, steps)
            observer.on_iteration(steps, metrics)
            note = ""
            if steps >= state["next_eval"]:
                started = time.perf_counter()
                ev = evaluate(
                    agent.policy(), scenario, settings.eval_users, settings.eval_seed, progress=progress.status
                )
                seconds = time.perf_counter() - started
                logger.evaluation(
                    ev.metrics,
                    steps,
                    agent=settings.name,
                    scenario=settings.scenario,
                    seed=settings.seed,
                    phase="train",
                )
                observer.on_evaluation(steps, ev.metrics, seconds)
                state["next_eval"] = steps + settings.interval
                note = f"eval {ev.metrics['return_mean']:.1f}"
                if settings.keep_best and ev.metrics["return_mean"] > best_return(run_dir):
                    # The snapshot records its own score: a kill between it and the next checkpoint loses nothing.
                    save_checkpoint(agent, run_dir / BEST, dict(state, best_return=float(ev.metrics["return_mean"])))
                    note += " (best so far)"
            progress.update(steps, metrics, note)
            if stop.received is not None:
                save_checkpoint(agent, ckpt, state)
                progress.close()
                raise Interrupted(stop.received, run_dir)
            if state["iteration"] % settings.checkpoint_every == 0:
                save_checkpoint(agent, ckpt, state)
    progress.close()
    save_checkpoint(agent, ckpt, state)


BEST = "best"  # a keep_best run's best snapshot, next to its checkpoint


def best_return(run_dir: Path) -> float:
    """The validation return of a run's best snapshot so far (-inf when it has none)."""
    record = run_dir / BEST / "state.json"
    return float(read_json(record, "best snapshot record")["best_return"]) if record.is_file() else -np.inf


def format_metrics(rows: Mapping[str, Mapping[str, float]]) -> str:
    """The final evaluation of each named policy, one column per policy."""
    keys = EVAL_TAGS[: EVAL_TAGS.index("coverage") + 1]
    names = list(rows)
    width = max(12, *(len(n) + 2 for n in names))
    lines = ["metric".ljust(22) + "".join(n.rjust(width) for n in names)]
    lines += [k.ljust(22) + "".join(f"{rows[n][k]:{width}.3f}" for n in names) for k in keys]
    return "\n".join(lines)


def build_agent(settings: RunSettings, device: str, run_dir: Path | None = None) -> Any:
    """The agent of `settings` (a TrainableAgent or a ready Policy), on `device` (resolved)."""
    return settings.spec.build(
        settings.scenario_config(),
        settings.algo,
        seed=settings.seed,
        device=device,
        model=dict(settings.model),
        run_dir=run_dir,
        ray_address=settings.ray_address,
    )


def run_one(
    settings: RunSettings,
    logdir: str | Path,
    resume: str | Path | None = None,
    observer: TrainingObserver | None = None,
) -> tuple[Path, dict[str, float]]:
    """One run: build the agent, train it if it trains, evaluate it and random on the same users.

    Returns (run directory, final metrics); `observer` hears the training loop's events. Bad settings or a
    bad checkpoint raise ValueError before any work is lost, and a new run that fails to build leaves no
    directory behind.
    """
    if not resume:
        writable_dir(logdir, "--logdir")  # first: a location that cannot be written costs nothing
    device = resolve_device(settings.device) if settings.spec.uses_device else "cpu"
    settings = settings.replace(device=device)  # run.json records where it really trained
    scenario = settings.scenario_config()
    state: dict[str, Any] = dict(iteration=0, next_eval=0)
    if resume:
        run_dir = writable_dir(resume, "--resume")
        # The checkpoint's own record first: a truncated or foreign one fails before the expensive setup.
        state = read_json(run_dir / "checkpoint" / "state.json", "checkpoint state")
        if not isinstance(state.get("env_steps"), int) or not isinstance(state.get("iteration"), int):
            raise ValueError(f"{run_dir / 'checkpoint' / 'state.json'} lacks env_steps or iteration: not a checkpoint")
        for record in sorted((run_dir / "checkpoint").glob("*.json")):  # the agent's own records too
            read_json(record, "checkpoint record")
    else:
        run_dir = new_run_dir(logdir, settings.scenario, settings.name, settings.seed)
        (run_dir / "run.json").write_text(json.dumps(settings.to_dict(), indent=2))
    print(f"run directory: {run_dir}", file=sys.stderr)

    agent = policy = None
    try:
        built = build_agent(settings, device, run_dir)
        if settings.spec.trains:
            agent = built
            if resume:
                agent.restore(run_dir / "checkpoint")
        else:
            policy = built
    except ValueError:  # bad settings or checkpoint: nothing was run, leave no half-made run behind
        if agent is not None:
            agent.close()
        if not resume:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    if resume:  # what was logged after the checkpoint is gone with it (TensorBoard: purge_step)
        truncate_results(run_dir, state["env_steps"])
    write_status(run_dir, "running", env_steps=state.get("env_steps", 0))
    logger = RunLogger(run_dir, purge_step=state.get("env_steps") if resume else None)
    try:
        if agent is not None:
            train(agent, settings, scenario, logger, run_dir, state, observer)
            if settings.keep_best:
                agent.restore(run_dir / BEST)  # the validation users' best, whatever the last iteration did
                print(
                    f"final policy: the best snapshot on validation users, at {agent.env_steps:,} env steps "
                    f"(validation return {best_return(run_dir):.1f})",
                    file=sys.stderr,
                )
            policy, steps = agent.policy(), agent.env_steps
        else:
            steps = 0
        final = evaluate(policy, scenario, settings.final_eval_users, EVAL_SEED, progress=Progress(1).status)
        baseline = evaluate(RandomPolicy(seed=settings.seed), scenario, settings.final_eval_users, EVAL_SEED)
        common = dict(scenario=settings.scenario, seed=settings.seed)
        # What the policy says of its own serving (refits, their time, a deployed model's staleness).
        served = policy.serving_stats() if hasattr(policy, "serving_stats") else {}
        logger.evaluation({**final.metrics, **served}, steps, agent=settings.name, phase="final", **common)
        # The random policy on the same users, for reference (not under this run's eval/ tags).
        logger.evaluation(baseline.metrics, steps, tensorboard=False, agent="random", phase="baseline", **common)
        final.episodes.to_csv(run_dir / "episodes.csv", index=False)
        final.timeline.to_csv(run_dir / "timeline.csv", index=False)
        if final.by_day is not None:  # lifetime scenarios: per-day curves (eval/by_day/*, eval_by_day.csv)
            logger.curves("eval/by_day", final.by_day, step="day")
        hp = dict(agent=settings.name, scenario=settings.scenario, seed=settings.seed, steps=steps)
        if agent is not None:
            hp.update(agent.hparams())
        logger.hparams(hp, final.metrics)
    except Interrupted as stop:
        write_status(run_dir, "interrupted", reason=str(stop), env_steps=agent.env_steps if agent else 0)
        print(f"\n{stop}: checkpoint saved; continue with --resume {shlex.quote(str(run_dir))}", file=sys.stderr)
        raise
    except BaseException as err:  # a crash, or Ctrl-C outside training: say so next to the results
        write_status(run_dir, "interrupted" if isinstance(err, KeyboardInterrupt) else "failed", reason=repr(err))
        raise
    finally:
        logger.close()
        if agent is not None:
            agent.close()
    write_status(run_dir, "finished", env_steps=steps, return_mean=final.metrics["return_mean"])
    print("\n" + format_metrics({settings.name: final.metrics, "random": baseline.metrics}))
    print(f"\nresults: {run_dir / 'results.csv'}")
    return run_dir, final.metrics


# ----------------------------------------------------------------------- restoring
def load_run(run_dir: str | Path) -> RunSettings:
    """The saved settings of a finished (or checkpointed) training run; errors name the path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"no run directory at {run_dir}")
    meta = run_dir / "run.json"
    if not meta.is_file():
        raise ValueError(f"no run.json in {run_dir} (is it a run directory?)")
    if not (run_dir / "checkpoint" / "state.json").is_file():
        raise ValueError(f"no checkpoint in {run_dir / 'checkpoint'}")
    record = read_json(meta, "run record")
    settings = RunSettings.from_dict(record, where=str(meta))
    changed = changed_dynamics(record)
    if changed:
        raise ValueError(
            f"{run_dir} was trained on '{settings.scenario}' as it was then; the scenario has changed since "
            f"(in {', '.join(changed)}), so it cannot be resumed or measured as a run of today's: retrain it"
        )
    read_json(run_dir / "checkpoint" / "state.json", "checkpoint state")
    if not settings.spec.trains:
        raise ValueError(f"{run_dir} holds a run of '{settings.agent}', which has no checkpoint to load")
    return settings


def restore_policy(run_dir: str | Path, device: str = "cpu") -> tuple[RunSettings, Any]:
    """(saved settings, greedy policy) of the checkpoint in a run directory, to evaluate elsewhere."""
    settings = load_run(run_dir)
    agent = build_agent(settings, resolve_device(device))
    try:
        agent.restore(Path(run_dir) / "checkpoint")
        return settings, agent.policy()
    finally:
        agent.close()


# ----------------------------------------------------------------------------- Ray
def ray_tasks(
    fn: Callable[..., Any], calls: list[tuple], parallel: int, ray_address: str | None = None, device: str = "cpu"
) -> list[Any]:
    """fn(*args) for every args in `calls`, as Ray tasks of one CPU (and one GPU when `device` is
    cuda): on the cluster at `ray_address`, or on a local Ray started with `parallel` CPUs.
    Results come back in the order of `calls`. A cuda device on a cluster without a GPU is an
    error before any task starts (a task asking for a GPU nobody has would wait forever)."""
    import ray

    if not ray.is_initialized():
        if ray_address:
            ray.init(address=ray_address)
        else:
            ray.init(num_cpus=parallel, include_dashboard=False, log_to_driver=True)
    num_gpus = 1 if device == "cuda" else 0
    if num_gpus and ray.cluster_resources().get("GPU", 0) < num_gpus:
        raise ValueError("--device cuda was given but the Ray cluster has no GPU")
    task = ray.remote(num_cpus=1, num_gpus=num_gpus)(fn)
    return ray.get([task.remote(*args) for args in calls])


def ray_device(device: str, ray_address: str | None) -> str:
    """The device Ray jobs train on, decided in the driver: 'auto' asks the cluster (a remote
    cluster may have GPUs this machine lacks), 'cuda' must find one there."""
    if device == "cpu":
        return "cpu"
    if ray_address is None:
        return resolve_device(device)
    import ray

    if not ray.is_initialized():
        ray.init(address=ray_address)
    has_gpu = ray.cluster_resources().get("GPU", 0) >= 1
    if device == "cuda" and not has_gpu:
        raise ValueError("--device cuda was given but the Ray cluster has no GPU")
    if not has_gpu:
        print("device auto: the Ray cluster has no GPU, training on the CPU", file=sys.stderr)
    return "cuda" if has_gpu else "cpu"


def run_seeds(
    settings: RunSettings, seeds: list[int], logdir: str | Path, parallel: int = 1
) -> list[tuple[Path, dict[str, float]]]:
    """Several seeds, one after another, or `parallel` at a time as Ray tasks (a GPU each on cuda)."""
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds lists a seed twice: {list(seeds)}")
    if parallel <= 1 and settings.ray_address is None:
        return [run_one(settings.replace(seed=s), logdir) for s in seeds]
    device = ray_device(settings.device, settings.ray_address)
    per_seed = [settings.replace(seed=s, device=device) for s in seeds]
    return ray_tasks(
        run_one, [(s, str(Path(logdir).resolve())) for s in per_seed], parallel, settings.ray_address, device
    )
