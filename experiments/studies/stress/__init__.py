"""Drift stress tests: train under one regime, evaluate under each drift family and magnitude.

  settings.py  StressSettings, the drift families and the regimes they make
  jobs.py      train or load each agent once per seed, evaluate it under every regime (Ray optional)
  analysis.py  robustness, degradation and shock recovery, as pure functions of the evaluations
  report.py    markdown tables, figures (plots.py), TensorBoard curves and report.md

`experiments/stress.py` is the command-line front end.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pandas as pd

from experiments.core.commands import repo_relative
from experiments.core.rundirs import read_json, writable_dir, write_json_whole, write_whole
from experiments.studies.stress.analysis import StressResult
from experiments.studies.stress.jobs import run_job, run_jobs
from experiments.studies.stress.report import load_outputs, write_outputs
from experiments.studies.stress.settings import DEFAULT_AGENTS, FAMILIES, NO_DRIFT, STRESS_SMOKE, StressSettings


def stress(
    settings: StressSettings,
    out: Path,
    parallel: int = 1,
    ray_address: str | None = None,
    command: str = "experiments/stress.py",
) -> StressResult:
    """Run the grid, then analyse it and write every output into `out`.

    `out` may hold an earlier invocation of the same stress test (interrupted or finished): what it
    saved is reused (jobs.py). One with other settings is an error before any work starts.
    """
    started = time.perf_counter()
    writable_dir(out, "--out")
    record = json.loads(json.dumps(asdict(settings), default=list))
    earlier = out / "settings.json"
    resumed = earlier.is_file()
    if resumed:
        saved = read_json(earlier, "stress test's settings")
        changed = sorted(k for k in record.keys() | saved.keys() if record.get(k) != saved.get(k))
        if changed:
            raise ValueError(
                f"--out {out} holds a stress test with other settings (differing in {', '.join(changed)}): "
                "give another --out, or the same settings to resume it"
            )
        print(f"stress: resuming the stress test in {out} (its saved evaluations are reused)", file=sys.stderr)
    else:
        write_json_whole(out / "settings.json", record)
    results = run_jobs(settings, out, parallel, ray_address)
    # The raw evaluations: --report-only redoes the analysis, tables and plots from them.
    write_whole(out / "jobs.pkl", lambda tmp: pd.to_pickle(results, tmp))
    seconds = time.perf_counter() - started
    write_json_whole(out / "command.json", dict(command=repo_relative(command), seconds=seconds, resumed=resumed))
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
