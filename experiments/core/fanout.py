"""Fanning runs out over Ray: tasks of one CPU (and a GPU on cuda), on a local Ray or a cluster."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from experiments.core.costs import check_run_memory
from experiments.core.devices import resolve_device
from experiments.core.reaper import watch_local_ray
from experiments.core.settings import RunSettings
from experiments.core.training import run_one
from simulator.params import check_seed


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
            watch_local_ray()  # its processes end with this one, however it ends
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
    for seed in seeds:  # every seed before the first run starts: a bad one must not cost the others
        check_seed("--seeds", seed)
    check_run_memory(settings)
    if parallel <= 1 and settings.ray_address is None:
        return [run_one(settings.replace(seed=s), logdir) for s in seeds]
    device = ray_device(settings.device, settings.ray_address)
    per_seed = [settings.replace(seed=s, device=device) for s in seeds]
    return ray_tasks(
        run_one, [(s, str(Path(logdir).resolve())) for s in per_seed], parallel, settings.ray_address, device
    )
