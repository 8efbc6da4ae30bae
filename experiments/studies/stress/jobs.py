"""The jobs of a stress test: train (or load) each agent once per seed under the training regime,
then evaluate a fresh copy of it under every regime, in-process or as Ray tasks.

Each evaluation is saved as it finishes (`evaluations/`, atomically), and a trained agent's run
keeps its checkpoint under `runs/`: a stress test run again into the same directory with the same
settings skips what is saved, resumes an interrupted training run from its checkpoint and reuses a
finished one, so a kill loses at most the evaluation or checkpoint interval in progress.

Temporal mode (settings.py): simulator-trained agents train on lives of train_days days;
supervised agents are fitted on the logs of days [0, train_days) of the served world and serve
from that day; online learners warm up on the training regime; everyone then serves lives of
serve_days days, and the evaluations keep their per-day curves (by_day) instead of the per-step ones.
"""

from __future__ import annotations

import copy
import dataclasses
import pickle
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd

from agents.registry import RETRAIN_SUFFIX, get_agent, retrain_days
from experiments.core.devices import resolve_device
from experiments.core.fanout import ray_device, ray_tasks
from experiments.core.harness import EVAL_SEED, evaluate
from experiments.core.records import load_run
from experiments.core.restore import restore_policy
from experiments.core.rundirs import STATUS_FILE, run_status, write_whole
from experiments.core.settings import RunSettings
from experiments.core.training import run_one
from experiments.studies.stress.settings import StressSettings, base_agent, same_regime


def plan_jobs(settings: StressSettings) -> list[dict[str, Any]]:
    """(agents, seed, load) for every policy to stress. Loaded runs replace training; an agent and
    its -retrain variant share one job (one fit on the logs, then a retraining copy)."""
    jobs, loaded = [], set()
    train = settings.train_config()
    for run_dir in settings.loads:  # unfinished (half-trained), truncated or inconsistent: refused, named
        saved = load_run(run_dir, flag="--load").settings
        cfg = saved.scenario_config()
        if settings.temporal and cfg.world.lifetime.enabled and not same_regime(cfg, train):
            lived = cfg.world.lifetime.horizon_days
            relived = dataclasses.replace(cfg, world=dataclasses.replace(cfg.world, lifetime=train.world.lifetime))
            if same_regime(relived, train):  # the same world but for the lives' horizon
                raise ValueError(
                    f"{run_dir} was trained on lives of {lived:g} days, not on days [0, {settings.train_days:g}) "
                    f"(stress it with --train-days {lived:g})"
                )
        if not same_regime(cfg, train):
            raise ValueError(
                f"{run_dir} was trained on '{saved.scenario}' with overrides "
                f"{dict(saved.scenario_overrides)}, not on the training regime "
                f"'{settings.train_scenario}' with {settings.train_overrides()}"
            )
        jobs.append(dict(agents=[saved.name], seed=saved.seed, load=str(run_dir)))
        loaded.add(saved.name)
    groups: dict[str, list[str]] = {}
    for agent in settings.agents:
        if agent not in loaded:
            groups.setdefault(base_agent(agent), []).append(agent)
    for names in groups.values():
        jobs.extend(dict(agents=names, seed=s, load=None) for s in settings.seeds)
    return jobs


def build_policies(settings: StressSettings, job: dict[str, Any], out: Path) -> dict[str, Any]:
    """The policies of one job (agent name -> policy), trained, loaded or fitted under the training regime."""
    device = resolve_device(settings.device)
    if job["load"]:
        return {job["agents"][0]: restore_policy(job["load"], device, flag="--load")[1]}
    base = base_agent(job["agents"][0])
    spec, algo, train = get_agent(base), dict(settings.algo.get(base, {})), settings.train_config()
    if spec.trains:  # the standard training run (TensorBoard, checkpoint), then its greedy policy
        run = RunSettings(
            agent=base,
            scenario=settings.train_scenario,
            scenario_overrides=settings.train_overrides(),
            model=dict(settings.model),
            algo=algo,
            steps=settings.steps,
            seed=job["seed"],
            device=device,
            eval_users=min(256, settings.eval_users),
            final_eval_users=settings.eval_users,
        )
        earlier = earlier_run(out / "runs", settings.train_label, base, job["seed"])
        if earlier is None or run_status(earlier) != "finished":  # new, or resumed from its checkpoint
            earlier, _ = run_one(run, out / "runs", resume=earlier)
        return {base: restore_policy(earlier, device)[1]}
    job_dir = out / "runs" / settings.train_label / base / str(job["seed"])  # logs of log-trained agents
    job_dir.mkdir(parents=True, exist_ok=True)
    policy = spec.build(
        settings.serve_config(),
        settings.agent_algo(base),
        seed=job["seed"],
        device=device,
        model=dict(settings.model),
        run_dir=job_dir,
    )
    if spec.online:  # its training: one pass over training users (seeded like training runs)
        evaluate(policy, train, settings.eval_users, seed=job["seed"])
    return {name: _variant(policy, name, settings) for name in job["agents"]}


def earlier_run(logdir: Path, scenario: str, agent: str, seed: int) -> Path | None:
    """The newest run directory an earlier invocation left for this agent and seed that can be
    finished or resumed (it has a status and a checkpoint); None if there is none."""
    runs = sorted((logdir / scenario / agent).glob(f"{seed}-*"), key=lambda p: p.stat().st_mtime)
    usable = [p for p in runs if (p / STATUS_FILE).is_file() and (p / "checkpoint" / "state.json").is_file()]
    return usable[-1] if usable else None


EVALUATIONS = "evaluations"  # one file per agent, seed and regime


def evaluation_path(out: Path, agent: str, seed: int, family: str, magnitude: float) -> Path:
    return out / EVALUATIONS / f"{agent}-seed{seed}-{family}-{magnitude:g}.pkl"


def load_evaluation(path: Path) -> dict[str, Any] | None:
    """A saved evaluation, or None when there is none; an unreadable one is said and redone."""
    if not path.is_file():
        return None
    try:
        piece = pd.read_pickle(path)
        if isinstance(piece, dict) and {"row", "curve"} <= piece.keys():
            return piece
    except (OSError, EOFError, ValueError, pickle.UnpicklingError, AttributeError, ImportError):
        pass
    print(f"stress: {path} is unreadable (corrupted); evaluating it again", file=sys.stderr)
    return None


def save_evaluation(path: Path, piece: dict[str, Any]) -> None:
    """Write atomically: a kill mid-write leaves no half file that a resume would trust."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_whole(path, lambda tmp: pd.to_pickle(piece, tmp))


def _variant(policy: Any, name: str, settings: StressSettings) -> Any:
    """The fitted `policy` as agent `name`: itself, or a copy refitting as it serves (NAME-retrain:
    every retrain_every served steps; NAME-retrain-<D>d: every D days)."""
    days = retrain_days(name)
    if days is not None:
        return policy.with_retraining(days=days)
    return policy.with_retraining(settings.retrain_every) if name.endswith(RETRAIN_SUFFIX) else policy


def run_job(settings: StressSettings, job: dict[str, Any], out: str) -> dict[str, Any]:
    """Train or load one job's agents for one seed, then evaluate a fresh copy of each under every regime.

    Returns rows (one per agent and regime: agent, seed, family, magnitude and the harness's
    metrics) and the curves of those evaluations: per step (timelines) in step mode, per day
    (by_day) in temporal mode. Evaluations saved in `out` by an earlier invocation are reused
    (the job's agents are not even built when all are there).
    """
    started = time.perf_counter()
    regimes = settings.regimes()
    keys = [(name, family, magnitude) for name in job["agents"] for family, magnitude, _ in regimes]
    paths = {k: evaluation_path(Path(out), k[0], job["seed"], k[1], k[2]) for k in keys}
    done = {k: piece for k in keys if (piece := load_evaluation(paths[k])) is not None}
    reused = len(done)
    if reused < len(keys):
        for name, policy in build_policies(settings, job, Path(out)).items():
            for family, magnitude, cfg in regimes:
                if (name, family, magnitude) in done:
                    continue
                # A copy per regime: online learners must not carry what they learned from one regime to the next.
                ev = evaluate(copy.deepcopy(policy), cfg, settings.eval_users, EVAL_SEED)
                key = dict(agent=name, seed=job["seed"], family=family, magnitude=magnitude)
                curve = ev.by_day if settings.temporal else ev.timeline
                piece = dict(row=dict(key, **ev.metrics), curve=curve.assign(**key))
                save_evaluation(paths[name, family, magnitude], piece)
                done[name, family, magnitude] = piece
    print(
        f"stress: {', '.join(job['agents'])} seed {job['seed']} done in {time.perf_counter() - started:.0f}s"
        + (f" ({reused} of {len(keys)} evaluations saved by an earlier invocation)" if reused else ""),
        file=sys.stderr,
    )
    rows = [done[k]["row"] for k in keys]
    curves = pd.concat([done[k]["curve"] for k in keys], ignore_index=True)
    return dict(rows=rows, by_day=curves) if settings.temporal else dict(rows=rows, timelines=curves)


def run_jobs(
    settings: StressSettings, out: Path, parallel: int = 1, ray_address: str | None = None
) -> list[dict[str, Any]]:
    """Every agent job plus the reference's, one after another or as Ray tasks (a GPU each on cuda)."""
    jobs = plan_jobs(settings) + [dict(agents=[settings.reference], seed=0, load=None)]
    if parallel <= 1 and ray_address is None:
        return [run_job(settings, j, str(out)) for j in jobs]
    device = ray_device(settings.device, ray_address)
    settings = settings.replace(device=device)
    return ray_tasks(run_job, [(settings, j, str(out.resolve())) for j in jobs], parallel, ray_address, device)
