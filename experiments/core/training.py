"""The training loop and one run: build the agent, train it with evaluations on schedule and checkpoints,
then evaluate it and the random policy on the same users.

  run_dir, metrics = run_one(RunSettings(agent="ppo", scenario="cognitive"), "runs")

A run writes runs/<scenario>/<name>/<seed>-<time>/ (<scenario>: a preset's name or a scenario file's
label): run.json (the settings), TensorBoard events (train/* and eval/* against environment steps),
results.csv, episodes.csv, timeline.csv and checkpoint/ (trainable agents). experiments.core.restore
reads a run back, experiments.core.fanout runs several seeds on Ray.
"""

from __future__ import annotations

import json
import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.policy import RandomPolicy, ServingStats
from envs.config import ScenarioConfig
from experiments.core.checkpoints import BEST, Interrupted, StopSignals, best_return, save_checkpoint, truncate_results
from experiments.core.devices import resolve_device
from experiments.core.harness import EVAL_SEED, evaluate
from experiments.core.rundirs import read_json, writable_dir, write_status
from experiments.core.settings import RunSettings
from experiments.core.tracking import EVAL_TAGS, RunLogger, new_run_dir


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
                    scenario=settings.scenario_label,
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
        model=settings.resolved_model,
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
        run_dir = new_run_dir(logdir, settings.scenario_label, settings.name, settings.seed)
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
        common = dict(scenario=settings.scenario_label, seed=settings.seed)
        # What the policy says of its own serving (refits, their time, a deployed model's staleness).
        served = policy.serving_stats() if isinstance(policy, ServingStats) else {}
        logger.evaluation({**final.metrics, **served}, steps, agent=settings.name, phase="final", **common)
        # The random policy on the same users, for reference (not under this run's eval/ tags).
        logger.evaluation(baseline.metrics, steps, tensorboard=False, agent="random", phase="baseline", **common)
        final.episodes.to_csv(run_dir / "episodes.csv", index=False)
        final.timeline.to_csv(run_dir / "timeline.csv", index=False)
        if final.by_day is not None:  # lifetime scenarios: per-day curves (eval/by_day/*, eval_by_day.csv)
            logger.curves("eval/by_day", final.by_day, step="day")
        hp = dict(agent=settings.name, scenario=settings.scenario_label, seed=settings.seed, steps=steps)
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
