"""Shared tiny-config fixtures for the simulator, drift, env and oracle tests, and `cli` to run an entry
point in-process.

Fixtures here are session-scoped factories (pure functions), so hypothesis tests
may use them without the function-scoped-fixture health check firing.
"""

from __future__ import annotations

import copy
import os
import runpy
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from envs import make_scenario
from simulator import World

ROOT = Path(__file__).resolve().parents[1]
# The tests' models are tiny: torch's intra-op threads only add synchronisation to every op (on two
# cores shared with other work, a smoke training run took 60 s with two threads and 5 s with one).
torch.set_num_threads(1)
# A local Ray (RLlib PPO's, Tune's) starts no idle worker processes ahead of need: the tests' PPO samples
# in the driver, and starting Ray took half the time without them.
os.environ.setdefault("RAY_prestart_worker_first_driver", "0")
# Small enough that every test runs in milliseconds.
TINY: dict[str, Any] = {
    "catalog": {"n_items": 100},
    "env": {"num_candidates": 8, "history_len": 8, "max_steps": 30},
}


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    """Nested merge of override mappings (extra wins); neither input is modified."""
    out = copy.deepcopy(dict(base))
    for key, value in (extra or {}).items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session")
def tiny() -> dict[str, Any]:
    """The tiny overrides (a fresh deep copy per call is made by `tiny_overrides`)."""
    return copy.deepcopy(TINY)


@pytest.fixture(scope="session")
def tiny_overrides():
    """tiny_overrides(extra) -> TINY deep-merged with `extra`."""
    return lambda extra=None: deep_merge(TINY, extra)


@pytest.fixture(scope="session")
def make_cfg():
    """make_cfg(name, extra) -> ScenarioConfig of preset `name` with TINY + `extra` overrides."""

    def _make(name: str = "stationary", extra: Mapping[str, Any] | None = None):
        return make_scenario(name, deep_merge(TINY, extra))

    return _make


@pytest.fixture(scope="session")
def make_world(make_cfg):
    """make_world(name, extra, n_users, seed) -> a raw simulator World on a tiny config."""

    def _make(
        name: str = "stationary", extra: Mapping[str, Any] | None = None, n_users: int = 8, seed: int = 0
    ) -> World:
        return World(make_cfg(name, extra).world, n_users, seed)

    return _make


@pytest.fixture(scope="session")
def random_slates():
    """random_slates(world, rng, k) -> [N, k] distinct-per-row ids of items present from the start."""

    def _make(world: World, rng: np.random.Generator, k: int = 1) -> np.ndarray:
        n_init = world.catalog.n_initial
        keys = rng.random((world.n_users, n_init))
        return np.argsort(keys, axis=1)[:, :k].astype(np.int64)

    return _make


@pytest.fixture(scope="session")
def cli():
    """cli(name, argv) -> what experiments/<name>.py's main(argv) returns (an exit status; bench.py: its
    records, None on an error). The entry point runs in-process with runpy: nothing imports a CLI."""

    def _run(name: str, argv: list[str]) -> Any:
        return runpy.run_path(str(ROOT / "experiments" / f"{name}.py"))["main"](argv)

    return _run


@pytest.fixture(scope="session")
def ppo_smoke_run(tmp_path_factory, cli) -> Path:
    """A finished `run.py --agent ppo --smoke` run directory (RLlib PPO, checkpointed), trained once for
    the tests that read, resume or break one: each works on its own copy (`copy_run`)."""
    logdir = tmp_path_factory.mktemp("ppo-smoke")
    assert cli("run", ["--agent", "ppo", "--smoke", "--logdir", str(logdir)]) == 0
    (run_dir,) = [p for p in logdir.glob("*/*/*") if p.is_dir()]
    return run_dir


@pytest.fixture(scope="session")
def copy_run():
    """copy_run(run_dir, into) -> a copy of the run directory in `into`, as <scenario>/<agent>/<run>
    (run.py's layout under a --logdir)."""
    return lambda run_dir, into: Path(shutil.copytree(run_dir, Path(into) / Path(*Path(run_dir).parts[-3:])))


def pytest_terminal_summary(terminalreporter) -> None:
    """The real-data tests skip without the data packages (README: Real data): say so in the summary,
    with the reason (the install command), rather than as a lone `s` in the dots."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if "test_realdata" in r.nodeid]
    if skipped:
        reason = skipped[0].longrepr[-1] if isinstance(skipped[0].longrepr, tuple) else ""
        reason = reason.removeprefix("Skipped: ")
        terminalreporter.write_line(f"{len(skipped)} real-data tests skipped: {reason}", yellow=True)


@pytest.fixture(scope="module")
def ray_session():
    """RLlibPPOAgent starts a local Ray when none runs; shut down only one this module started."""
    import ray

    started_here = not ray.is_initialized()
    yield
    if started_here and ray.is_initialized():
        ray.shutdown()
