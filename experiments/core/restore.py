"""Restoring a trained run: its saved settings (checked against today's scenario) and its greedy policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.core.devices import resolve_device
from experiments.core.rundirs import read_json
from experiments.core.settings import RunSettings, changed_dynamics, check_scenario_file
from experiments.core.training import build_agent


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
    check_scenario_file(record, run_dir)  # a scenario file that changed would be another world
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
