"""Hyperparameter sweeps on Ray Tune over any field of a run config (scenario:, model:, algo:).

A search space maps dotted fields of the run config to Tune search domains (or fixed values):

  algo.lr: {loguniform: [1.0e-5, 1.0e-3]}
  model.d_model: {choice: [64, 128]}
  scenario.cognitive.magnitude: {uniform: [0.5, 2.0]}
  algo.num_epochs: {randint: [2, 6]}        # Tune's randint: 2, 3, 4 or 5 (the high end excluded)
  algo.entropy_coeff: 0.005                 # fixed in every trial

Every trial trains through the project's own run path (experiments.core.training.run_one: the same training
loop, evaluations, run directories and checkpoints as run.py) and reports each evaluation's return to
Tune, so an ASHA scheduler stops the trials that trail; the last report is the final evaluation on
`final_eval_users` users. The configs are sampled here, seeded, and each one is checked by building
its RunSettings before Ray starts: a bad field or domain costs no trial.

  settings = SweepSettings(base=RunSettings(agent="ppo"), space=load_space("space.yaml"), num_samples=8)
  table, best = sweep(settings, "sweeps/ppo")          # results.csv, results.md, best.yaml in the folder
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from envs.config import load_overrides
from experiments.core.fanout import ray_device
from experiments.core.reaper import watch_local_ray
from experiments.core.rundirs import staged, writable_dir, write_text_whole
from experiments.core.settings import CONFIG_SECTIONS, RunSettings
from experiments.core.tables import markdown_table
from experiments.core.training import TrainingObserver, run_one
from simulator.params import check_int, merge_overrides

SCHEDULERS = ("asha", "fifo")
METRIC = "return_mean"  # the harness's mean return per evaluation user (minutes watched)
# Domain (the name of Tune's constructor) -> what its argument must be.
DOMAINS = {
    "loguniform": "[low, high], 0 < low < high",
    "uniform": "[low, high], low < high",
    "randint": "[low, high], integers, low < high (high excluded)",
    "choice": "a non-empty list of values",
}


def _domain_error(name: str, kind: str, args: Any) -> ValueError:
    return ValueError(f"space field {name}: {kind} takes {DOMAINS[kind]}, got {args!r}")


def check_domain(name: str, spec: Mapping[str, Any]) -> tuple[str, Any]:
    """(kind, arguments) of one field's domain mapping, e.g. {loguniform: [1e-5, 1e-3]}; else a ValueError."""
    if len(spec) != 1 or next(iter(spec)) not in DOMAINS:
        raise ValueError(
            f"space field {name}: a domain is one of {', '.join(DOMAINS)} with its arguments "
            f"(e.g. {{loguniform: [1.0e-5, 1.0e-3]}}), got {dict(spec)!r}"
        )
    kind, args = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise _domain_error(name, kind, args)
        return kind, args
    is_number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    if not isinstance(args, list) or len(args) != 2 or not all(is_number(v) for v in args) or args[0] >= args[1]:
        raise _domain_error(name, kind, args)
    if kind == "loguniform" and args[0] <= 0:
        raise _domain_error(name, kind, args)
    if kind == "randint" and not all(isinstance(v, int) for v in args):
        raise _domain_error(name, kind, args)
    return kind, args


def check_space(space: Mapping[str, Any]) -> None:
    """Field names are section.field[.field...] with a section of the run config; domains are well formed."""
    if not isinstance(space, Mapping) or not space:
        raise ValueError("the search space must map at least one field (e.g. algo.lr) to a domain")
    for name, spec in space.items():
        section, _, rest = str(name).partition(".")
        if section not in CONFIG_SECTIONS or not rest:
            raise ValueError(
                f"space field {name!r}: fields are dotted paths in the run config, starting with "
                f"{', '.join(s + '.' for s in CONFIG_SECTIONS)} (e.g. algo.lr, scenario.cognitive.magnitude)"
            )
        if isinstance(spec, Mapping):
            check_domain(name, spec)


def load_space(path: str | Path) -> dict[str, Any]:
    """The search space of a YAML file (see the module docstring), checked."""
    space = load_overrides(path)
    try:
        check_space(space)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    return space


def tune_domains(space: Mapping[str, Any]) -> dict[str, Any]:
    """The space as Tune search domains (fixed values stay as they are)."""
    from ray import tune

    domains = {}
    for name, spec in space.items():
        if not isinstance(spec, Mapping):
            domains[name] = spec
            continue
        kind, args = check_domain(name, spec)
        domains[name] = tune.choice(list(args)) if kind == "choice" else getattr(tune, kind)(*args)
    return domains


def _plain(value: Any) -> Any:
    """`value` with numpy scalars as Python numbers, nested (for YAML, JSON and the run record)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value.item() if hasattr(value, "item") else value


def sample_configs(space: Mapping[str, Any], num_samples: int, seed: int) -> list[dict[str, Any]]:
    """`num_samples` flat configs {dotted field: value} drawn from the space with a seeded generator."""
    import numpy as np

    rng = np.random.default_rng(seed)
    domains = tune_domains(space)
    return [
        {
            name: _plain(d.sample(random_state=rng) if hasattr(d, "sample") else copy.deepcopy(d))
            for name, d in domains.items()
        }
        for _ in range(num_samples)
    ]


def sections(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A flat config {"algo.lr": 1e-4, "scenario.cognitive.magnitude": 2} as run-config sections."""
    out: dict[str, dict[str, Any]] = {s: {} for s in CONFIG_SECTIONS}
    for name, value in config.items():
        section, *path = name.split(".")
        node = out[section]
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def trial_settings(base: RunSettings, config: Mapping[str, Any]) -> RunSettings:
    """The base run with one trial's values on top (validated: RunSettings checks every field)."""
    extra = sections(config)
    return base.replace(
        scenario_overrides=merge_overrides(base.scenario_overrides, extra["scenario"]),
        model=merge_overrides(base.model, extra["model"]),
        algo=merge_overrides(base.algo, extra["algo"]),
    )


def config_file(settings: RunSettings) -> dict[str, dict[str, Any]]:
    """The `--config` file of a run: its non-empty scenario:, model: and algo: sections."""
    parts = dict(scenario=settings.scenario_overrides, model=settings.model, algo=settings.algo)
    return {k: _plain(v) for k, v in parts.items() if v}


@dataclass(frozen=True)
class SweepSettings:
    """One sweep: `base` is the run every trial starts from (agent, scenario, steps, device, evaluation
    sizes, a --config's sections, ray_address); `space` the search space (see the module docstring);
    `num_samples` trials, drawn with `seed`; `scheduler` asha (stop trailing trials at evaluations) or
    fifo (run every trial to the end); `num_cpus` of a local Ray (None: every core; ignored on a cluster)."""

    base: RunSettings
    space: Mapping[str, Any] = field(default_factory=dict)
    num_samples: int = 8
    scheduler: str = "asha"
    seed: int = 0
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        o = "sweep"
        if not isinstance(self.base, RunSettings):
            raise ValueError(f"sweep.base must be RunSettings, got {type(self.base).__name__}")
        if not self.base.spec.trains:
            trainable = ", ".join(a for a in _trainable_agents())
            raise ValueError(f"--agent {self.base.agent} does not train: a sweep needs one of {trainable}")
        check_space(self.space)
        check_int(o, "num_samples", self.num_samples, 1, 100_000)
        check_int(o, "seed", self.seed, 0)
        if self.num_cpus is not None:
            check_int(o, "num_cpus", self.num_cpus, 1)
        if self.scheduler not in SCHEDULERS:
            raise ValueError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {self.scheduler!r}")

    def configs(self) -> list[dict[str, Any]]:
        """The trials' sampled configs, each checked by building its RunSettings (a ValueError names the
        sample and the field)."""
        configs = sample_configs(self.space, self.num_samples, self.seed)
        for i, config in enumerate(configs):
            try:
                trial_settings(self.base, config)
            except ValueError as err:
                values = ", ".join(f"{k}={v!r}" for k, v in config.items())
                raise ValueError(f"sample {i} ({values}): {err}") from None
        return configs

    @property
    def trial_resources(self) -> dict[str, float]:
        """What one trial holds: a CPU for its training loop, one per env-runner process, a GPU on cuda."""
        runners = int(getattr(self.base.params, "num_env_runners", 0) or 0)
        return {"CPU": 1 + runners, "GPU": 1 if self.base.device == "cuda" else 0}


def _trainable_agents() -> list[str]:
    from agents.registry import AGENTS

    return [name for name, spec in AGENTS.items() if spec.trains]


class TuneReporter(TrainingObserver):
    """Reports each evaluation during training to Ray Tune (which may stop the trial there)."""

    def __init__(self) -> None:
        self.run_dir, self.env_steps = "", 0

    def on_start(self, run_dir: Path, env_steps: int) -> None:
        self.run_dir, self.env_steps = str(run_dir), env_steps

    def on_iteration(self, env_steps: int, metrics: Mapping[str, float]) -> None:
        self.env_steps = env_steps

    def on_evaluation(self, env_steps: int, metrics: Mapping[str, float], seconds: float) -> None:
        self.report(metrics, "train")

    def report(self, metrics: Mapping[str, float], evaluation: str) -> None:
        from ray import tune

        tune.report(
            {METRIC: float(metrics[METRIC]), "env_steps": self.env_steps, "eval": evaluation, "run_dir": self.run_dir}
        )


def run_trial(config: dict[str, Any], base: RunSettings, logdir: str) -> None:
    """A Tune function trainable: one run of `base` with the trial's values, through run_one."""
    reporter = TuneReporter()
    _, final = run_one(trial_settings(base, config), logdir, observer=reporter)
    reporter.report(final, "final")


def start_ray(settings: SweepSettings) -> None:
    import ray

    if ray.is_initialized():
        return
    if settings.base.ray_address:
        ray.init(address=settings.base.ray_address)
    else:
        ray.init(num_cpus=settings.num_cpus or os.cpu_count(), include_dashboard=False)
        watch_local_ray()  # its processes end with this one, however it ends


def scheduler(settings: SweepSettings) -> Any:
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if settings.scheduler == "fifo":
        return FIFOScheduler()
    # Rungs at evaluations (time_attr: env steps); trials that reach the end are never stopped before
    # their final evaluation (stop_last_trials=False).
    return ASHAScheduler(
        time_attr="env_steps",
        max_t=settings.base.steps,
        grace_period=min(settings.base.interval, settings.base.steps),
        reduction_factor=3,
        stop_last_trials=False,
    )


def sweep(settings: SweepSettings, out: str | Path) -> tuple[pd.DataFrame, Path]:
    """Run the sweep; write results.csv, results.md and best.yaml (a run.py --config file) into `out`.

    Returns (the results table, best trial first; the path of best.yaml)."""
    configs = settings.configs()  # every trial checked before Ray starts
    out = writable_dir(out, "--out").resolve()
    start_ray(settings)
    device = ray_device(settings.base.device, settings.base.ray_address)
    # Trials train where the driver decided (a cluster's GPU), never on a guess of their own.
    settings = dataclasses.replace(settings, base=settings.base.replace(device=device))
    base = settings.base

    from ray import tune
    from ray.tune.search import BasicVariantGenerator

    trainable = tune.with_resources(
        tune.with_parameters(run_trial, base=base, logdir=str(out / "runs")),
        {k: v for k, v in settings.trial_resources.items() if v},
    )
    tuner = tune.Tuner(
        trainable,
        param_space=tune_domains(settings.space),
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="max",
            num_samples=settings.num_samples,
            scheduler=scheduler(settings),
            # The configs drawn and checked above, in order: each replaces one of num_samples.
            search_alg=BasicVariantGenerator(points_to_evaluate=configs),
        ),
        run_config=tune.RunConfig(name="tune", storage_path=str(out), verbose=1),
    )
    grid = tuner.fit()
    table = results_table(grid, list(settings.space))
    with staged(out) as stage:  # the table and its markdown: both or neither
        table.to_csv(stage / "results.csv", index=False)
        (stage / "results.md").write_text(results_markdown(table) + "\n")
    return table, write_best(settings, table, out / "best.yaml")


def results_table(grid: Any, fields: list[str]) -> pd.DataFrame:
    """One row per trial: its values, the last reported return (the final evaluation when it ran to the
    end, else the evaluation where the scheduler stopped it), steps, status, run directory."""
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        status = "error" if result.error else ("finished" if metrics.get("eval") == "final" else "stopped")
        row = {f: result.config.get(f) for f in fields}
        row.update(
            return_mean=metrics.get(METRIC, float("nan")),
            eval=metrics.get("eval", ""),
            env_steps=metrics.get("env_steps"),
            status=status,
            seconds=round(float(metrics.get("time_total_s", float("nan"))), 1),
            run_dir=metrics.get("run_dir", ""),
            error=str(result.error).strip().splitlines()[-1] if result.error else "",
        )
        rows.append(row)
    table = pd.DataFrame(rows)
    # Finished trials first (their return is the final evaluation), best return first.
    table["_done"] = table.status == "finished"
    table = table.sort_values(["_done", METRIC], ascending=[False, False], na_position="last")
    return table.drop(columns="_done").reset_index(drop=True)


def results_markdown(table: pd.DataFrame) -> str:
    """results.md: the results table with floats in 4 significant digits, missing values empty."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else f"{v:.4g}"
        return "" if v is None else str(v)

    return markdown_table(table.columns, ([cell(v) for v in row] for row in table.itertuples(index=False)))


def write_best(settings: SweepSettings, table: pd.DataFrame, path: Path) -> Path:
    """best.yaml: the base run's sections with the best finished trial's values, as run.py --config takes."""
    import yaml

    finished = table[table.status == "finished"]
    if finished.empty:
        raise ValueError(f"no trial of the sweep finished: see {path.parent / 'results.csv'}")
    best = finished.iloc[0]
    config = {f: _plain(best[f]) for f in settings.space}
    run = trial_settings(settings.base, config)
    steps = "" if run.steps == RunSettings().steps else f" --steps {run.steps}"
    header = (
        f"# Best of {len(table)} trials ({settings.scheduler}): {METRIC} {best[METRIC]:.3f} "
        f"on {run.final_eval_users} evaluation users.\n"
        f"# python experiments/run.py --agent {run.agent} --scenario {run.scenario}{steps} --config {path.name}\n"
    )
    return write_text_whole(path, header + yaml.safe_dump(config_file(run), sort_keys=True))


def print_table(table: pd.DataFrame) -> None:
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.drop(columns=["run_dir", "error"]).to_string(index=False), file=sys.stdout)
