"""Simulator throughput: user-steps/s of the raw World and of the VectorEnv path (observations included)."""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

CONFIGS = {
    # The product's default scenario: every drift family on.
    "default": ("mixed", {}),
    # Like RecSim interest_evolution: interests evolve with consumption; 20 topics, 10 candidates, slate of 2.
    "recsim": ("cognitive", {"catalog": {"n_topics": 20}, "env": {"num_candidates": 10, "slate_size": 2}}),
    # Users with lifetimes: sessions, return visits and churn over 60 days, drift on calendar time.
    "lifetime": ("lifetime", {}),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--users", type=int, nargs="+", default=[1, 256, 4096, 65536], help="N values")
    parser.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=["default", "recsim", "lifetime"])
    parser.add_argument("--paths", nargs="+", choices=("raw", "vector"), default=["raw", "vector"])
    parser.add_argument("--seconds", type=float, default=1.5, help="timed seconds per window (at least)")
    parser.add_argument(
        "--repeats",
        type=_repeats,
        default=3,
        help="timed windows per measurement, one after the other on the same env: the median is reported, with "
        "the range (a shared machine's neighbours move a single window by a fifth)",
    )
    parser.add_argument(
        "--threads",
        type=_threads,
        default=1,
        help="VectorEnv threads building observations (RecVectorEnv's threads; 0: one per core)",
    )
    parser.add_argument(
        "--memory-users", type=int, default=1_000_000, help="also report peak memory with this many users (0: skip)"
    )


def _threads(text: str) -> int:
    from envs.parallel import MAX_THREADS

    if not text.isdigit() or int(text) > MAX_THREADS:
        raise argparse.ArgumentTypeError(f"--threads {text!r}: give 0 (one per core) to {MAX_THREADS}")
    return int(text)


def _repeats(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"--repeats {text!r}: give 1 to 100 timed windows")
    return int(text)


def _scenario(config: str):
    from envs.config import make_scenario

    preset, overrides = CONFIGS[config]
    return make_scenario(preset, overrides)


def measure(
    path: str, config: str, n_users: int, seconds: float, seed: int = 0, threads: int = 1, repeats: int = 1
) -> dict:
    """Time steps of one path; episodes restart as they end, as in training. `threads` is the
    VectorEnv's (0: one per core); the raw path has one. `repeats` windows of at least `seconds` each,
    one after the other: the record gives their median rates, and every window's in `windows`."""
    from envs.vector import RecVectorEnv
    from simulator.world import World

    scenario = _scenario(config)
    rng = np.random.default_rng(seed)
    k, c = scenario.env.slate_size, scenario.env.num_candidates
    if path == "raw":
        world = World(scenario.world, n_users, seed)
        slates = rng.integers(0, world.catalog.n_initial, size=(8, n_users, k))

        horizon = scenario.world.lifetime.horizon_days if scenario.world.lifetime.enabled else np.inf

        def step(i: int) -> None:
            result = world.step(slates[i % 8])
            done = result.terminated | (result.session_end & (world.state.day >= horizon))
            if done.any():
                world.reset_users(done)
    else:
        env = RecVectorEnv(n_users, scenario, seed=seed, threads=threads or None)
        env.reset(seed=seed)
        shape = (8, n_users) if k == 1 else (8, n_users, k)
        actions = rng.integers(0, c, size=shape)

        def step(i: int) -> None:
            env.step(actions[i % 8])

    for i in range(3):  # warm-up
        step(i)
    done, windows = 3, []
    for _ in range(repeats):
        steps, start, cpu_start = 0, time.perf_counter(), time.process_time()
        while True:
            step(done + steps)
            steps += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds and steps >= 3:
                break
        done += steps
        cpu = time.process_time() - cpu_start  # every thread of the process: on a loaded machine, the figure to compare
        windows.append(
            dict(
                steps=steps,
                seconds=round(elapsed, 3),
                user_steps_per_s=round(steps * n_users / elapsed, 1),
                cpu_user_steps_per_s=round(steps * n_users / max(cpu, 1e-9), 1),
            )
        )
    median = lambda key: float(np.median([w[key] for w in windows]))  # noqa: E731
    return dict(
        path=path,
        config=config,
        n_users=n_users,
        threads=1 if path == "raw" else threads,
        steps=sum(w["steps"] for w in windows),
        seconds=round(sum(w["seconds"] for w in windows), 3),
        user_steps_per_s=median("user_steps_per_s"),
        cpu_user_steps_per_s=median("cpu_user_steps_per_s"),
        windows=windows,
    )


def peak_memory(path: str, config: str, n_users: int) -> dict:
    """Peak resident memory of a fresh process that builds `n_users` users and steps them 5 times."""
    code = (
        f"from experiments.studies.benchmarks.sim import measure, _peak_rss_mb; "
        f"measure({path!r}, {config!r}, {n_users}, 0.0); print(_peak_rss_mb())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    record = dict(path=path, config=config, n_users=n_users)
    if out.returncode != 0:  # refused by the memory check (or killed): say why instead of a number
        lines = out.stderr.strip().splitlines()
        return dict(record, peak_rss_mb=float("nan"), error=lines[-1] if lines else f"exit {out.returncode}")
    return dict(record, peak_rss_mb=float(out.stdout.strip().splitlines()[-1]))


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)  # Linux: KiB


def run(args: argparse.Namespace) -> list[dict]:
    records = []
    for config in args.configs:
        for path in args.paths:
            for n in args.users:
                records.append(measure(path, config, n, args.seconds, threads=args.threads, repeats=args.repeats))
                print(_line(records[-1]), file=sys.stderr, flush=True)
    if args.memory_users:
        for config in [c for c in ("default", "lifetime") if c in args.configs]:
            for path in args.paths:
                records.append(peak_memory(path, config, args.memory_users))
                print(_line(records[-1]), file=sys.stderr, flush=True)
    return records


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['path']:>6} {r['config']:>8} N={r['n_users']:>8,d}  not built: {r['error']}"
    if "peak_rss_mb" in r:
        return f"{r['path']:>6} {r['config']:>8} N={r['n_users']:>8,d}  peak memory {r['peak_rss_mb']:,.0f} MB"
    threads = f"  threads={r['threads'] or 'per core'}" if r.get("threads", 1) != 1 else ""
    rates = [w["user_steps_per_s"] for w in r.get("windows", [])]
    spread = f", windows {min(rates):,.0f}-{max(rates):,.0f}" if len(rates) > 1 else ""
    return (
        f"{r['path']:>6} {r['config']:>8} N={r['n_users']:>8,d}  {r['user_steps_per_s']:>12,.0f} user-steps/s"
        f"  ({r['cpu_user_steps_per_s']:,.0f} per CPU-second{spread}){threads}"
    )


def format_records(records: list[dict]) -> str:
    return "\n".join(_line(r) for r in records)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    records = run(args)
    print(json.dumps(records) if args.json else format_records(records))
    return records


if __name__ == "__main__":
    main()
