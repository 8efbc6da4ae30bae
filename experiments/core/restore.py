"""Restoring a trained run: its greedy policy, read through the one loader (experiments.core.records), which
refuses a run that has not finished, is truncated or inconsistent, or was trained on a scenario that has
changed since."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.core.devices import resolve_device
from experiments.core.records import CHECKPOINT, load_run
from experiments.core.settings import RunSettings
from experiments.core.training import build_agent


def restore_policy(run_dir: str | Path, device: str = "cpu", flag: str = "") -> tuple[RunSettings, Any]:
    """(saved settings, greedy policy) of a finished run's checkpoint, to evaluate elsewhere. A run the loader
    refuses is a ValueError naming it, the file and why (`flag`: what the user gave, to start the line with)."""
    settings = load_run(run_dir, flag=flag).settings
    agent = build_agent(settings, resolve_device(device))
    try:
        agent.restore(Path(run_dir) / CHECKPOINT)
        return settings, agent.policy()
    finally:
        agent.close()
