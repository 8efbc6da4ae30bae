"""Drift stress tests: train under one regime, evaluate under each drift family and magnitude.

  settings.py  StressSettings, the drift families and the regimes they make
  jobs.py      train or load each agent once per seed, evaluate it under every regime (Ray optional)
  analysis.py  robustness, degradation and shock recovery, as pure functions of the evaluations
  report.py    markdown tables, figures (plots.py), TensorBoard curves and report.md

`experiments/stress.py` is the command-line front end.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from experiments.runs import writable_dir
from experiments.stresstest.analysis import StressResult
from experiments.stresstest.jobs import run_job, run_jobs
from experiments.stresstest.report import load_outputs, write_outputs
from experiments.stresstest.settings import DEFAULT_AGENTS, FAMILIES, NO_DRIFT, STRESS_SMOKE, StressSettings


def stress(
    settings: StressSettings,
    out: Path,
    parallel: int = 1,
    ray_address: str | None = None,
    command: str = "experiments/stress.py",
) -> StressResult:
    """Run the grid, then analyse it and write every output into `out`."""
    started = time.perf_counter()
    writable_dir(out, "--out")
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2, default=list))
    results = run_jobs(settings, out, parallel, ray_address)
    # The raw evaluations: --report-only redoes the analysis, tables and plots from them.
    pd.to_pickle(results, out / "jobs.pkl")
    (out / "command.json").write_text(json.dumps(dict(command=command, seconds=time.perf_counter() - started)))
    return write_outputs(settings, results, out)


__all__ = [
    "DEFAULT_AGENTS",
    "FAMILIES",
    "NO_DRIFT",
    "STRESS_SMOKE",
    "StressResult",
    "StressSettings",
    "load_outputs",
    "run_job",
    "run_jobs",
    "stress",
    "write_outputs",
]
