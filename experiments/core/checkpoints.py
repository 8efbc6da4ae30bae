"""Checkpoints and stop signals: a checkpoint is swapped in whole (a kill mid-save keeps the previous one),
a keep_best run keeps its best snapshot beside it, a resumed run drops the results logged after its
checkpoint, and SIGINT/SIGTERM/SIGHUP stop training after the iteration under way, checkpointed."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from experiments.core.rundirs import read_json

# --------------------------------------------------------------------- stop signals
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(Exception):
    """Training stopped on a signal (Ctrl-C, a scheduler's SIGTERM or SIGHUP) after checkpointing."""

    def __init__(self, signum: int, run_dir: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.run_dir = signum, run_dir


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP only ask the training loop to stop: it finishes the
    iteration under way, checkpoints and raises Interrupted. The previous handlers come back after."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is None:
            print(f"\n{signal.Signals(signum).name}: stopping after this iteration (checkpointing)", file=sys.stderr)
        self.received = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def save_checkpoint(agent: Any, path: Path, state: Mapping[str, Any]) -> None:
    """Write to a temporary directory, then swap it in: a kill mid-save keeps the previous checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    agent.save(tmp)
    (tmp / "state.json").write_text(json.dumps(dict(state, env_steps=agent.env_steps)))
    old = path.with_name(path.name + ".old")
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


BEST = "best"  # a keep_best run's best snapshot, next to its checkpoint


def best_return(run_dir: Path) -> float:
    """The validation return of a run's best snapshot so far (-inf when it has none)."""
    record = run_dir / BEST / "state.json"
    return float(read_json(record, "best snapshot record")["best_return"]) if record.is_file() else -np.inf


def truncate_results(run_dir: Path, env_steps: int) -> None:
    """On resume: drop the rows results.csv gained after the checkpoint (training evaluations past
    its step count, and any final evaluation), so that the resumed run appends to what the
    checkpoint had seen, never twice."""
    path = run_dir / "results.csv"
    if not path.is_file():
        return
    import pandas as pd

    try:
        rows = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        raise ValueError(f"{path} is corrupted: cannot resume a run whose results cannot be read") from None
    keep = (rows.get("phase") == "train") & (rows.get("env_steps", 0) <= env_steps)
    tmp = path.with_name(path.name + ".tmp")
    rows[keep].to_csv(tmp, index=False)
    os.replace(tmp, path)
