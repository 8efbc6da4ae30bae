"""Checkpoints and stop signals: a checkpoint is swapped in whole (a kill mid-save keeps the previous one,
a failed save leaves no temporary copy), a keep_best run keeps its best snapshot beside it, and
SIGINT/SIGTERM/SIGHUP stop a run anywhere in its life: in the training loop after the iteration under way,
checkpointed; during a save once the save is whole; anywhere else (start-up, an evaluation) at once."""

from __future__ import annotations

import json
import shutil
import signal
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from experiments.core.records import BEST, recover_checkpoint
from experiments.core.rundirs import read_json

# --------------------------------------------------------------------- stop signals
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


class Interrupted(Exception):
    """A run stopped on a signal (Ctrl-C, a scheduler's SIGTERM or SIGHUP); `run_dir` None before it had one."""

    def __init__(self, signum: int, run_dir: Path | None = None) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name}")
        self.signum, self.run_dir = signum, run_dir


class StopSignals:
    """While active, SIGINT, SIGTERM and SIGHUP stop the run: inside a `deferred()` block (a training
    iteration, a checkpoint being saved) they are noted (`received`) for the block's owner to act on once
    the block is done; anywhere else they raise Interrupted at once. The previous handlers come back after.
    Outside the main thread signals cannot be caught: the handlers stay as they were."""

    def __init__(self, run_dir: Path | None = None) -> None:
        self.received: int | None = None
        self.run_dir = run_dir
        self._deferring = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        for sig in STOP_SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: signals cannot be caught here
                break
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.received is None
        self.received = signum
        if not self._deferring:
            raise Interrupted(signum, self.run_dir)
        if first:
            print(f"\n{signal.Signals(signum).name}: stopping after this step (checkpointing)", file=sys.stderr)

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A block a signal does not cut short: the signal waits in `received` until it ends."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1

    def check(self) -> None:
        """Raise Interrupted for a signal received during a deferred block (after the block has ended)."""
        if self.received is not None:
            raise Interrupted(self.received, self.run_dir)

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def save_checkpoint(agent: Any, path: Path, state: Mapping[str, Any]) -> None:
    """Write to a temporary directory, then swap it in: a kill mid-save keeps the previous checkpoint (as
    <path>.old between the two renames: `records.recover_checkpoint` puts it back), and a save that fails
    (a full disk) removes its temporary directory and keeps the previous checkpoint in place."""
    recover_checkpoint(path)
    tmp, old = path.with_name(path.name + ".tmp"), path.with_name(path.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        agent.save(tmp)
        (tmp / "state.json").write_text(json.dumps(dict(state, env_steps=agent.env_steps)))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    shutil.rmtree(old, ignore_errors=True)


def best_return(run_dir: Path) -> float:
    """The validation return of a run's best snapshot so far (-inf when it has none)."""
    record = run_dir / BEST / "state.json"
    return float(read_json(record, "best snapshot record")["best_return"]) if record.is_file() else -np.inf
