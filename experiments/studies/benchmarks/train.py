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
                    wall time from the start of training (the warm start included); None (and `target_note`
                    says so) when the return never got there within `env_steps`. The default target is
                    TARGETS[scenario] (95% of the 5-seed mean of the default run before the stream
                    encoder on `mixed`, that mean itself on `lifetime`); other scenarios need --target
  flops_per_env_step  torch's FlopCounterMode over one training iteration after the run (sampling and
                    the learner's update, every epoch; no warm start) / its env steps
  peak_memory_mb    the run's peak resident memory of this process (the learner, and the sampler with
                    num_env_runners 0), polled; on cuda also the device's peak allocation (peak_cuda_mb)
  load_start, load_end  the 1-minute load average around the run (other jobs slow it down)

--device auto measures the CPU, and CUDA too when a GPU is visible.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from experiments.core.devices import cuda_available, resolve_device
from experiments.core.settings import RunSettings, load_config_sections, with_smoke_sizes
from experiments.core.training import TrainingObserver, run_one

AGENTS = ("ppo", "sb3-ppo")
TARGETS = {"mixed": 50.8, "lifetime": 2825.0}  # issue 35: the time-to-return targets of the default runs
MEMORY_POLL_S = 0.2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--agent", choices=(*AGENTS, "both"), default="both", help="which PPO (default: both)")
    parser.add_argument("--steps", type=int, default=None, help="env steps per agent (default: run.py's 250,000)")
    parser.add_argument(
        "--target",
        type=float,
        default=None,
        help=f"evaluation return to reach, minutes (default: {', '.join(f'{k} {v:g}' for k, v in TARGETS.items())})",
    )
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


class PeakMemory:
    """The peak resident memory of this process while the block runs (a thread polls /proc every
    MEMORY_POLL_S; elsewhere the process's lifetime peak), and on cuda the device's peak allocation."""

    def __init__(self, device: str) -> None:
        self.device, self.peak_mb, self.cuda_mb = device, 0.0, None
        self._stop = threading.Event()

    @staticmethod
    def resident_mb() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, ValueError, IndexError):
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    def _poll(self) -> None:
        while not self._stop.wait(MEMORY_POLL_S):
            self.peak_mb = max(self.peak_mb, self.resident_mb())

    def __enter__(self) -> PeakMemory:
        self.peak_mb = self.resident_mb()
        if self.device == "cuda":
            import torch

            torch.cuda.reset_peak_memory_stats()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, self.resident_mb())
        if self.device == "cuda":
            import torch

            self.cuda_mb = torch.cuda.max_memory_allocated() / 2**20


def flop_counter() -> Any:
    """torch's FlopCounterMode, counting the CPU's fused attention kernel too (torch counts its CUDA
    ones, and nothing for the CPU's flash kernel): the window encoder's attention runs there."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

    def forward(q, k, v, *_, out_shape=None, **__) -> int:
        return sdpa_flop_count(q, k, v)

    def backward(grad, q, k, v, *_, out_shape=None, **__) -> int:
        return sdpa_backward_flop_count(grad, q, k, v)

    aten = torch.ops.aten
    cpu_attention = {
        aten._scaled_dot_product_flash_attention_for_cpu: forward,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: backward,
    }
    return FlopCounterMode(display=False, custom_mapping=cpu_attention)


def flops_per_env_step(settings: RunSettings) -> float:
    """FLOPs of one training iteration of `settings`' agent (sampling and the learner's update, every
    epoch; after one iteration to settle, without the warm start) per env step, by FlopCounterMode."""
    from experiments.core.training import build_agent

    algo, params = dict(settings.algo), settings.params
    if getattr(params, "pretrain_epochs", 0) and not getattr(params, "freeze_history_encoder", False):
        algo["pretrain_epochs"] = 0  # the iterations' cost; a frozen encoder needs its warm start
    agent = build_agent(settings.replace(algo=algo), settings.device)
    try:
        agent.train_iteration()
        before = agent.env_steps
        counter = flop_counter()
        with counter:
            agent.train_iteration()
        return counter.get_total_flops() / max(agent.env_steps - before, 1)
    finally:
        agent.close()


def measure(settings: RunSettings, target: float | None, logdir: str | Path) -> dict:
    """Train and evaluate one run of `settings` (device resolved) and time it."""
    clock = TrainingClock(float("inf") if target is None else target)
    load_start = os.getloadavg()[0]
    with PeakMemory(settings.device) as memory:
        _, final = run_one(settings, logdir, observer=clock)
    load_end = os.getloadavg()[0]
    flops = flops_per_env_step(settings)
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
        target_note=""
        if reached
        else (
            f"no target for {settings.scenario!r} (give --target)"
            if target is None
            else f"not reached within {clock.trained_steps:,d} steps"
        ),
        flops_per_env_step=round(flops),
        peak_memory_mb=round(memory.peak_mb, 1),
        peak_cuda_mb=None if memory.cuda_mb is None else round(memory.cuda_mb, 1),
        model=dict(settings.resolved_model),
        load_start=round(load_start, 2),
        load_end=round(load_end, 2),
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
            target = args.target if args.target is not None else TARGETS.get(settings.scenario)
            records.append(measure(settings, target, args.logdir or tmp))
            print(_line(records[-1]), file=sys.stderr, flush=True)
    return records


def _line(r: dict) -> str:
    target = (
        f"{r['time_to_target_s']:,.0f} s to {r['target']:g} min"
        if r["time_to_target_s"] is not None
        else r["target_note"]
    )
    target += f", {r['flops_per_env_step'] / 1e6:,.1f} MFLOP/env step, peak {r['peak_memory_mb']:,.0f} MB"
    return (
        f"{r['agent']:>8} {r['device']:>4}  {r['env_steps_per_s']:>8,.0f} env-steps/s  "
        f"(sample {r['sample_s']:,.0f} s, learn {r['learn_s']:,.0f} s, warm start {r['pretrain_s']:,.0f} s, "
        f"evaluations {r['eval_s']:,.0f} s)  final return {r['final_return']:.1f}  {target}  "
        f"[{r['torch_threads']} torch threads, load {r['load_start']:.1f}-{r['load_end']:.1f}]"
    )


def format_records(records: list[dict]) -> str:
    return "\n".join(_line(r) for r in records)
