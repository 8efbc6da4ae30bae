"""The training loop and one run: build the agent, train it with evaluations on schedule and checkpoints,
then evaluate it and the random policy on the same users.

  run_dir, metrics = run_one(RunSettings(agent="ppo", scenario="cognitive"), "runs")

A run writes runs/<scenario>/<name>/<seed>-<time>/ (<scenario>: a preset's name or a scenario file's
label): run.json (the settings), TensorBoard events (train/* and eval/* against environment steps),
results.csv, episodes.csv, timeline.csv and checkpoint/ (trainable agents). experiments.core.restore
reads a run back, experiments.core.fanout runs several seeds on Ray.
"""

from __future__ import annotations

import math
import shlex
import shutil
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from agents.policy import Fingerprinted, RandomPolicy, ServingStats
from envs.config import ScenarioConfig
from experiments.core.checkpoints import Interrupted, StopSignals, best_return, save_checkpoint
from experiments.core.costs import check_run_memory
from experiments.core.devices import resolve_device
from experiments.core.harness import EVAL_SEED, evaluate
from experiments.core.reaper import watch_local_ray
from experiments.core.records import (
    BEST,
    CHECKPOINT,
    RunRefused,
    checkpoint_state,
    read_record,
    resume_entry,
    rewind_results,
    write_record,
)
from experiments.core.rundirs import (
    RunLock,
    no_space,
    read_json,
    remove_torn,
    writable_dir,
    write_status,
    write_whole,
)
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
    stop: StopSignals | None = None,
) -> None:
    """The training loop: iterate, log train/*, evaluate on schedule, checkpoint. A stop signal (`stop`'s,
    or this loop's own) ends it after the iteration under way, checkpointed: Interrupted."""
    observer = observer or TrainingObserver()
    progress = Progress(settings.steps, agent.env_steps)
    ckpt = run_dir / CHECKPOINT
    observer.on_start(run_dir, agent.env_steps)
    if getattr(agent, "warm_start_pending", False):  # minutes on lifetimes: say what the wait is
        progress.status(f"warm start: {agent.warm_start_pending}")

    last_fingerprint: str | None = None  # of the policy evaluated last (Fingerprinted policies), and its metrics
    last_metrics: dict[str, Any] = {}

    def iteration() -> None:
        """One training iteration, its train/* scalars and, when one is due, an evaluation (and a best snapshot)."""
        nonlocal last_fingerprint, last_metrics
        metrics = agent.train_iteration()
        state["iteration"] += 1
        steps = agent.env_steps
        logger.scalars("train", metrics, steps)
        observer.on_iteration(steps, metrics)
        note = ""
        if steps >= state["next_eval"]:
            started = time.perf_counter()
            policy = agent.policy()
            fingerprint = policy.fingerprint() if isinstance(policy, Fingerprinted) else None
            reused = fingerprint is not None and fingerprint == last_fingerprint
            if reused:  # the same policy on the same users: the same figures (a critic warm-up moves no actor weight)
                evaluated = last_metrics
            else:
                ev = evaluate(policy, scenario, settings.eval_users, settings.eval_seed, progress=progress.status)
                evaluated = ev.metrics
                last_fingerprint, last_metrics = fingerprint, evaluated
            seconds = time.perf_counter() - started
            logger.evaluation(
                evaluated,
                steps,
                agent=settings.name,
                scenario=settings.scenario_label,
                seed=settings.seed,
                phase="train",
            )
            observer.on_evaluation(steps, evaluated, seconds)
            state["next_eval"] = steps + settings.interval
            note = f"eval {evaluated['return_mean']:.1f}" + (" (the policy unchanged: not re-run)" if reused else "")
            if settings.keep_best and evaluated["return_mean"] > best_return(run_dir):
                # The snapshot records its own score: a kill between it and the next checkpoint loses nothing.
                save_checkpoint(agent, run_dir / BEST, dict(state, best_return=float(evaluated["return_mean"])))
                note += " (best so far)"
        progress.update(steps, metrics, note)

    with nullcontext(stop) if stop is not None else StopSignals(run_dir) as stop:
        while agent.env_steps < settings.steps:
            with stop.deferred():
                iteration()
                if stop.received is not None or state["iteration"] % settings.checkpoint_every == 0:
                    save_checkpoint(agent, ckpt, state)
            if stop.received is not None:
                progress.close()
                stop.check()
        progress.close()
        with stop.deferred():
            save_checkpoint(agent, ckpt, state)
        stop.check()


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


class RunFailed(ValueError):
    """A run stopped by a fault it could not go on through (a full disk, a NaN result): one line that names the
    run, what happened and, where its checkpoint is whole, the --resume that continues it."""


def resume_hint(run_dir: Path) -> str:
    return f"continue with: python experiments/run.py --resume {shlex.quote(str(run_dir))}"


def run_one(
    settings: RunSettings,
    logdir: str | Path,
    resume: str | Path | None = None,
    observer: TrainingObserver | None = None,
) -> tuple[Path, dict[str, float]]:
    """One run: build the agent, train it if it trains, evaluate it and random on the same users.

    Returns (run directory, final metrics); `observer` hears the training loop's events. Bad settings (a
    size that would not fit in memory included) or a bad checkpoint raise ValueError before any work, and a
    new run that fails or is stopped while starting leaves no directory behind. One process at a time works
    in a run directory (RunLock). From then on a stop signal, anywhere (start-up, training, an evaluation,
    a checkpoint being saved), or a fault (a full disk) leaves the status and files as a later --resume needs
    them: Interrupted for a signal, RunFailed for a fault, each after one line with the resume hint.
    """
    check_run_memory(settings)  # every size that decides memory, before any directory or work
    if not resume:
        writable_dir(logdir, "--logdir")  # first: a location that cannot be written costs nothing
    device = resolve_device(settings.device) if settings.spec.uses_device else "cpu"
    settings = settings.replace(device=device)  # run.json records where it really trained
    with StopSignals() as stop:  # from here on a signal stops the run wherever it is, leaving it resumable
        run_dir, lock, state, resumes = _open_run(settings, logdir, resume, stop)
        try:
            return _run(settings, run_dir, state, resumes, resume is not None, observer, stop)
        finally:
            lock.release()


def _open_run(
    settings: RunSettings, logdir: str | Path, resume: str | Path | None, stop: StopSignals
) -> tuple[Path, RunLock, dict[str, Any], list[dict[str, Any]]]:
    """The run directory, locked: a new one with run.json, or the resumed one with its checkpoint's state
    (read and checked before the expensive setup) and its resumes so far."""
    if not resume:
        run_dir = new_run_dir(logdir, settings.scenario_label, settings.name, settings.seed)
        stop.run_dir = run_dir
        try:
            lock = RunLock(run_dir).acquire("--logdir")
            write_record(run_dir, settings)
        except BaseException:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise
        print(f"run directory: {run_dir}", file=sys.stderr)
        return run_dir, lock, dict(iteration=0, next_eval=0), []
    run_dir = writable_dir(resume, "--resume")
    stop.run_dir = run_dir
    lock = RunLock(run_dir).acquire("--resume")
    try:
        remove_torn(run_dir)  # a kill -9 mid-write leaves temporary files: never read, cleared here
        recorded, _, resumes = read_record(run_dir, "--resume")
        state = checkpoint_state(run_dir, flag="--resume")
        if state is None:
            raise RunRefused(
                run_dir, f"{CHECKPOINT}/state.json", "is missing: no checkpoint to resume from", "--resume"
            )
        for record in sorted((run_dir / CHECKPOINT).glob("*.json")):  # the agent's own records too
            read_json(record, "checkpoint record")
        if settings.steps != recorded.steps and settings.steps < state["env_steps"]:  # a budget it is already past
            raise ValueError(
                f"--steps {settings.steps:,} is below the {state['env_steps']:,} env steps {run_dir} has trained: "
                f"a resumed run goes on from its checkpoint (give --steps {state['env_steps']:,} or more)"
            )
    except BaseException:
        lock.release()
        raise
    print(f"run directory: {run_dir} (resuming from {state['env_steps']:,} env steps)", file=sys.stderr)
    return run_dir, lock, state, resumes


def _run(
    settings: RunSettings,
    run_dir: Path,
    state: dict[str, Any],
    resumes: list[dict[str, Any]],
    resumed: bool,
    observer: TrainingObserver | None,
    stop: StopSignals,
) -> tuple[Path, dict[str, float]]:
    scenario = settings.scenario_config()
    agent = policy = None
    try:  # start-up: nothing is run yet, so a failure or a signal leaves the run as it was
        built = build_agent(settings, settings.device, run_dir)
        watch_local_ray()  # a local Ray this process started ends with it, even after kill -9
        if settings.spec.trains:
            agent = built
            if resumed:
                agent.restore(run_dir / CHECKPOINT)
        else:
            policy = built
    except BaseException as err:
        if agent is not None:
            agent.close()
        if not resumed:  # nothing was run: leave no half-made run behind
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(err, Interrupted):
            told = (
                "nothing was run (run directory removed)"
                if not resumed
                else f"the run is as it was; {resume_hint(run_dir)}"
            )
            print(f"\n{err} during start-up: {told}", file=sys.stderr)
        raise
    phase = "training"
    try:
        if resumed:  # what was logged after the checkpoint is gone with it (TensorBoard: from the step after)
            for note in rewind_results(run_dir, state["env_steps"]):
                print(note, file=sys.stderr)
        write_status(run_dir, "running", env_steps=state.get("env_steps", 0))
        if resumed:  # run.json says what the run goes on to do (--steps, --device given), and when it went on
            write_record(run_dir, settings, [*resumes, resume_entry(state["env_steps"], settings)])
        logger = RunLogger(run_dir, resumed_from=state["env_steps"] if resumed else None)
    except BaseException:
        if agent is not None:
            agent.close()
        raise
    try:
        if agent is not None:
            train(agent, settings, scenario, logger, run_dir, state, observer, stop)
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
        phase = "the final evaluation"
        final = evaluate(policy, scenario, settings.final_eval_users, EVAL_SEED, progress=Progress(1).status)
        if not math.isfinite(final.metrics["return_mean"]):
            raise RunFailed(f"{run_dir}: the final evaluation's return_mean is {final.metrics['return_mean']}: refused")
        baseline = evaluate(RandomPolicy(seed=settings.seed), scenario, settings.final_eval_users, EVAL_SEED)
        phase = "writing the results"
        common = dict(scenario=settings.scenario_label, seed=settings.seed)
        # What the policy says of its own serving (refits, their time, a deployed model's staleness).
        served = policy.serving_stats() if isinstance(policy, ServingStats) else {}
        logger.evaluation({**final.metrics, **served}, steps, agent=settings.name, phase="final", **common)
        # The random policy on the same users, for reference (not under this run's eval/ tags).
        logger.evaluation(baseline.metrics, steps, tensorboard=False, agent="random", phase="baseline", **common)
        write_whole(run_dir / "episodes.csv", lambda tmp: final.episodes.to_csv(tmp, index=False))
        write_whole(run_dir / "timeline.csv", lambda tmp: final.timeline.to_csv(tmp, index=False))
        if final.by_day is not None:  # lifetime scenarios: per-day curves (eval/by_day/*, eval_by_day.csv)
            logger.curves("eval/by_day", final.by_day, step="day")
        hp = dict(agent=settings.name, scenario=settings.scenario_label, seed=settings.seed, steps=steps)
        if agent is not None:
            hp.update(agent.hparams())
        logger.hparams(hp, final.metrics)
        logger.close()
        with stop.deferred():  # the results and their status mark go together
            write_status(run_dir, "finished", env_steps=steps, return_mean=final.metrics["return_mean"])
    except BaseException as err:
        _stopped(run_dir, err, phase, settings)
        if no_space(err):  # one line: what could not be written, and how to go on
            raise _as_failure(run_dir, err, phase, settings) from None
        raise
    finally:
        logger.close()
        if agent is not None:
            agent.close()
    print("\n" + format_metrics({settings.name: final.metrics, "random": baseline.metrics}))
    print(f"\nresults: {run_dir / 'results.csv'}")
    return run_dir, final.metrics


def _stopped(run_dir: Path, err: BaseException, phase: str, settings: RunSettings) -> None:
    """Mark a run stopped by `err` during `phase` (interrupted: a signal; failed: anything else), with the
    env steps of the checkpoint a --resume goes on from, and say so in one line with the resume hint."""
    saved = _checkpoint_steps(run_dir) if settings.spec.trains else None
    hint = resume_hint(run_dir) if saved is not None else "run it again"
    kept = f"checkpoint saved ({saved:,} env steps); " if saved is not None else ""
    status = "interrupted" if isinstance(err, (Interrupted, KeyboardInterrupt)) else "failed"
    reason = str(err) if isinstance(err, (Interrupted, RunFailed)) or no_space(err) else repr(err)
    try:
        write_status(run_dir, status, reason=reason, phase=phase, env_steps=saved or 0)
    except OSError as mark:  # the disk is full even for the status mark: the lock tells readers the truth
        print(f"cannot mark {run_dir} {status}: {mark.strerror or mark}", file=sys.stderr)
    remove_torn(run_dir)
    if isinstance(err, (Interrupted, KeyboardInterrupt)):  # faults say their line as the error they raise
        where = "" if phase == "training" else f" during {phase}"
        print(f"\n{err or 'stopped by SIGINT'}{where}: {kept}{hint}", file=sys.stderr)


def _as_failure(run_dir: Path, err: BaseException, phase: str, settings: RunSettings) -> RunFailed:
    """A full disk as one line: the run, the file that could not be written, and how to go on."""
    saved = _checkpoint_steps(run_dir) if settings.spec.trains else None
    go_on = f"free some space, then {resume_hint(run_dir)}" if saved is not None else "free some space and run it again"
    return RunFailed(
        f"{run_dir}: {err.strerror or err} writing {err.filename or 'its files'} during {phase}; "
        + (f"its checkpoint ({saved:,} env steps) is whole: " if saved is not None else "")
        + go_on
    )


def _checkpoint_steps(run_dir: Path) -> int | None:
    try:
        state = checkpoint_state(run_dir)
    except ValueError:
        return None
    return None if state is None else int(state["env_steps"])
