"""The one logging path: TensorBoard scalars, hyperparameters and results.csv for a run directory.

Run directories are runs/<scenario>/<agent>/<seed>-<time>/, so
`tensorboard --logdir runs` overlays every agent of a scenario.
"""

from __future__ import annotations

import errno
import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.core.records import RESULTS_FILE, ROW_KEYS
from experiments.core.rundirs import write_whole

EVAL_TAGS = (
    "return_mean",
    "return_ci95",
    "ctr",
    "session_length",
    "satisfaction_end",
    "consumption_entropy",
    "slate_diversity",
    "coverage",
    "homogenisation",
    "homogenisation_trend",
    "sessions_mean",  # lifetime scenarios
    "churn_rate",
    "gap_mean",
    "watch_per_active_day",
    "retention_d1",
    "retention_d7",
    "retention_d30",
)


def new_run_dir(logdir: str | Path, scenario: str, agent: str, seed: int) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    parent = Path(logdir) / scenario / agent
    parent.mkdir(parents=True, exist_ok=True)
    # mkdir itself claims the name: two runs started in the same second (parallel seeds,
    # Tune trials in other processes) cannot both take it, as an exists() check would let them.
    suffix = 0
    while True:
        path = parent / (f"{seed}-{stamp}-{suffix}" if suffix else f"{seed}-{stamp}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            suffix += 1


def append_whole(path: Path, text: str) -> None:
    """Append `text` (whole lines) to `path` with one write; a write that fails is cut back off the file,
    so that it never ends in part of `text`."""
    data = text.encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        size = os.fstat(fd).st_size
        try:
            written = os.write(fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, f"only {written} of {len(data)} bytes written", str(path))
        except BaseException:
            os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)


class RunLogger:
    """Writes `train/*` and `eval/*` scalars against environment steps, and results.csv.

    results.csv grows a whole row at a time: each row is appended with one write, and a write that fails
    (a full disk) is cut back off, so the file never ends in half a row; rewrites (a row with new columns)
    and the other tables are swapped in whole. `resumed_from`: the env steps of the checkpoint a resumed run
    goes on from; TensorBoard drops the events logged after it (from the step after it: the checkpoint's
    own step was logged before the checkpoint was saved, and is kept)."""

    def __init__(self, run_dir: Path, resumed_from: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = Path(run_dir)
        purge = None if resumed_from is None else resumed_from + 1
        self.writer = SummaryWriter(str(self.run_dir), purge_step=purge)
        self.results_path = self.run_dir / RESULTS_FILE

    def scalars(self, prefix: str, values: Mapping[str, float], step: int) -> None:
        for key, value in values.items():
            if value is not None and isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(f"{prefix}/{key}", float(value), global_step=step)
        self.writer.flush()

    def evaluation(self, metrics: Mapping[str, float], step: int, tensorboard: bool = True, **row: Any) -> None:
        """Log one evaluation: a row of results.csv and (unless told not to) TensorBoard eval/*."""
        if tensorboard:
            self.scalars("eval", {k: metrics[k] for k in EVAL_TAGS if k in metrics}, step)
        record = dict(row, env_steps=step, **metrics)
        # A fixed column order, so appended rows line up under the header.
        columns = [k for k in ROW_KEYS if k in record] + [k for k in record if k not in ROW_KEYS]
        frame = pd.DataFrame([record], columns=columns)
        if not self.results_path.exists():
            write_whole(self.results_path, lambda tmp: frame.to_csv(tmp, index=False))
            return
        header = list(pd.read_csv(self.results_path, nrows=0).columns)
        if set(columns) <= set(header):  # under the existing header, blanks where this row has no value
            append_whole(self.results_path, frame.reindex(columns=header).to_csv(header=False, index=False))
        else:  # a row with new columns (a policy's serving stats): rewrite under the union of the columns
            merged = pd.concat([pd.read_csv(self.results_path), frame], ignore_index=True)
            write_whole(self.results_path, lambda tmp: merged.to_csv(tmp, index=False))

    def curves(self, prefix: str, frame: pd.DataFrame, step: str) -> None:
        """One TensorBoard curve per column of `frame` against its column `step` (e.g. eval/by_day/*
        against the day), and the frame as <prefix with / as _>.csv in the run directory."""
        for column in frame.columns:
            if column == step:
                continue
            for x, value in zip(frame[step], frame[column]):
                if isinstance(value, (int, float)) and math.isfinite(value):
                    self.writer.add_scalar(f"{prefix}/{column}", float(value), global_step=int(x))
        self.writer.flush()
        write_whole(self.run_dir / f"{prefix.replace('/', '_')}.csv", lambda tmp: frame.to_csv(tmp, index=False))

    def hparams(self, hparams: Mapping[str, Any], final_metrics: Mapping[str, float]) -> None:
        flat = {
            k: (v if isinstance(v, (int, float, str, bool)) else json.dumps(v, default=str)) for k, v in hparams.items()
        }
        self.writer.add_hparams(
            flat,
            {f"hparam/{k}": v for k, v in final_metrics.items() if k in EVAL_TAGS and math.isfinite(v)},
            run_name=".",
        )
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
