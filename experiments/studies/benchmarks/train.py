"""Training throughput: env-steps/s of RLlib PPO and SB3 PPO, sampling and learning timed apart, and
the wall time until the evaluation return first reaches a target.

Each agent trains through the project's own run path (experiments.core.training.run_one: the same training
loop, evaluations and final evaluation as `run.py`), with a TrainingObserver for clocks. A record:

  agent, device, torch_threads, env_steps       what ran (env steps actually trained)
  env_steps_per_s   env steps / the training iterations' wall time (no warm start, no evaluations)
  sample_s, learn_s the iterations' time spent sampling and learning (summed over iterations)
  pretrain_s        PPO's supervised warm start of the encoder (0 when none)
  eval_s            evaluations during training
  train_wall_s      from the start of training to the end of its last iteration or evaluation (all of the
                    above, and checkpoints)
  final_return      the final evaluation (final_eval_users users, seed EVAL_SEED, as run.py)
  target, time_to_target_s  the first evaluation during training at or above `target` minutes, as
                    wall time from the start of training; None (and `target_note` says so) when the
                    return never got there within `env_steps`
  load_start, load_end  the 1-minute load average around the run (other jobs slow it down)

--device auto measures the CPU, and CUDA too when a GPU is visible.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from experiments.core.devices import cuda_available, resolve_device
from experiments.core.settings import RunSettings, load_config_sections, with_smoke_sizes
from experiments.core.training import TrainingObserver, run_one

AGENTS = ("ppo", "sb3-ppo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", choices=(*AGENTS, "both"), default="both", help="which PPO (default: both)")
    parser.add_argument("--steps", type=int, default=None, help="env steps per agent (default: run.py's 250,000)")
    parser.add_argument("--target", type=float, default=60.0, help="evaluation return to reach, minutes (default 60)")
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto (default): the CPU, and CUDA too when a GPU is visible",
    )
    parser.add_argument("--scenario", default="mixed", help="scenario preset (default: mixed)")
    parser.add_argument("--config", default=None, metavar="FILE.yaml", help="run config (scenario:/model:/algo:)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-interval", type=int, default=None, help="env steps between evaluations")
    parser.add_argument("--logdir", default=None, help="keep the run directories here (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="toy sizes (seconds), as run.py --smoke")


class TrainingClock(TrainingObserver):
    """Sums the training loop's times and notes when the evaluation return first reaches `target`."""

    def __init__(self, target: float) -> None:
        self.target = target
        self.start = self.end = 0.0
        self.sample_s = self.learn_s = self.iteration_s = self.pretrain_s = self.eval_s = 0.0
        self.first_steps = self.last_steps = 0
        self.time_to_target_s: float | None = None
        self.steps_to_target: int | None = None

    def on_start(self, run_dir: Path, env_steps: int) -> None:
        self.start = self.end = time.perf_counter()
        self.first_steps = self.last_steps = env_steps

    def on_iteration(self, env_steps: int, metrics: Mapping[str, float]) -> None:
        self.end, self.last_steps = time.perf_counter(), env_steps
        self.sample_s += metrics["sample_s"]
        self.learn_s += metrics["learn_s"]
        self.iteration_s += metrics["iteration_s"]
        pretrain = metrics.get("pretrain_s", float("nan"))
        self.pretrain_s += pretrain if pretrain == pretrain else 0.0  # NaN: no warm start this iteration

    @property
    def trained_steps(self) -> int:
        return self.last_steps - self.first_steps

    def on_evaluation(self, env_steps: int, metrics: Mapping[str, float], seconds: float) -> None:
        self.end = time.perf_counter()
        self.eval_s += seconds
        if self.time_to_target_s is None and metrics["return_mean"] >= self.target:
            self.time_to_target_s = self.end - self.start
            self.steps_to_target = env_steps


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def measure(settings: RunSettings, target: float, logdir: str | Path) -> dict:
    """Train and evaluate one run of `settings` (device resolved) and time it."""
    clock = TrainingClock(target)
    load_start = os.getloadavg()[0]
    _, final = run_one(settings, logdir, observer=clock)
    reached = clock.time_to_target_s is not None
    record = dict(
        agent=settings.agent,
        device=settings.device,
        scenario=settings.scenario,
        torch_threads=torch_threads(),
        env_steps=clock.trained_steps,
        env_steps_per_s=round(clock.trained_steps / clock.iteration_s, 1) if clock.iteration_s > 0 else None,
        sample_s=round(clock.sample_s, 2),
        learn_s=round(clock.learn_s, 2),
        pretrain_s=round(clock.pretrain_s, 2),
        eval_s=round(clock.eval_s, 2),
        train_wall_s=round(clock.end - clock.start, 2),
        final_return=round(float(final["return_mean"]), 3),
        target=target,
        time_to_target_s=round(clock.time_to_target_s, 2) if reached else None,
        steps_to_target=clock.steps_to_target,
        target_note="" if reached else f"not reached within {clock.trained_steps:,d} steps",
        load_start=round(load_start, 2),
        load_end=round(os.getloadavg()[0], 2),
    )
    return record


def devices(device: str) -> list[str]:
    if device == "auto":
        return ["cpu", "cuda"] if cuda_available() else ["cpu"]
    return [resolve_device(device)]


def run(args: argparse.Namespace) -> list[dict]:
    agents = list(AGENTS) if args.agent == "both" else [args.agent]
    sections = load_config_sections(args.config)
    if "algo" in sections and len(agents) > 1:
        raise ValueError(f"{args.config} has an algo: section, which is one agent's settings: give --agent")
    given = {k: v for k, v in dict(steps=args.steps, eval_interval=args.eval_interval).items() if v is not None}
    plans = []
    for agent in agents:  # every setting checked before the first run
        for device in devices(args.device):
            settings = RunSettings(
                agent=agent,
                scenario=args.scenario,
                scenario_overrides=sections.get("scenario", {}),
                model=sections.get("model", {}),
                algo=sections.get("algo", {}),
                seed=args.seed,
                device=device,
                **given,
            )
            plans.append(with_smoke_sizes(settings, **given) if args.smoke else settings)
    records = []
    # run_one prints its results table on stdout, which belongs to the records (--json).
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp, contextlib.redirect_stdout(sys.stderr):
        for settings in plans:
            records.append(measure(settings, args.target, args.logdir or tmp))
            print(_line(records[-1]), file=sys.stderr, flush=True)
    return records


def _line(r: dict) -> str:
    target = (
        f"{r['time_to_target_s']:,.0f} s to {r['target']:g} min"
        if r["time_to_target_s"] is not None
        else r["target_note"]
    )
    return (
        f"{r['agent']:>8} {r['device']:>4}  {r['env_steps_per_s']:>8,.0f} env-steps/s  "
        f"(sample {r['sample_s']:,.0f} s, learn {r['learn_s']:,.0f} s, warm start {r['pretrain_s']:,.0f} s, "
        f"evaluations {r['eval_s']:,.0f} s)  final return {r['final_return']:.1f}  {target}  "
        f"[{r['torch_threads']} torch threads, load {r['load_start']:.1f}-{r['load_end']:.1f}]"
    )


def format_records(records: list[dict]) -> str:
    return "\n".join(_line(r) for r in records)
