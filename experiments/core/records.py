"""A run's record, and the one loader every reader of a run directory goes through.

run.json is written here (`write_record`): the settings the run ran with, rewritten at every --resume
with the settings it went on with (a `--resume RUN --steps 4500` records 4500, and the configuration
label follows), and its `resumes`: one entry per resume (when, from which checkpoint, to which budget).

`load_run` reads a run back for compare.py, stress.py --load, offline.py --ppo-run, validity.py
--history-runs, run.py --resume and the Python API (experiments.core.restore). It refuses, with one line
that names the run, the file and why (`RunRefused`), what is unfinished, truncated or inconsistent:

- run.json missing, unreadable, or with a key no setting knows;
- status.json not `finished`: still running (a live process holds the run's lock), killed while running
  (no process holds it), interrupted or failed (each with the --resume that continues it), or missing;
- results.csv missing, with a row cut mid-line or corrupted, without its final evaluation and the
  random baseline written after it, or with a final return that is not a number;
- a checkpoint that is not the policy that was evaluated (older or newer than the final evaluation);
- where a policy is restored, a scenario (a preset's dynamics, or a scenario file) that has changed since the
  run was trained.

results.csv is validated row by row (`read_results`): a row is whole when it ends its line and has
every column, with the run's keys and a numeric return. On resume, `rewind_results` drops what a
resumed run will log again (rows after the checkpoint) and any row cut mid-line, and says so.
"""

from __future__ import annotations

import csv
import io
import math
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from experiments.core.rundirs import lock_holder, read_json, read_status, write_json_whole, write_whole
from experiments.core.settings import RunSettings, changed_dynamics, scenario_file_change

RECORD_FILE = "run.json"
RESULTS_FILE = "results.csv"
CHECKPOINT = "checkpoint"
BEST = "best"  # a keep_best run's best snapshot, next to its checkpoint
RESUMES = "resumes"  # run.json: the run's resumes (RunSettings does not hold them)
PHASES = ("train", "final", "baseline")  # results.csv: evaluations during training, the final one, random's
ROW_KEYS = ("agent", "scenario", "seed", "phase", "env_steps")  # the first columns of every results.csv row


class RunRefused(ValueError):
    """A run directory a reader cannot trust: `run_dir`, the file at fault (`file`, relative to it) and why."""

    def __init__(self, run_dir: Path, file: str, why: str, flag: str = "") -> None:
        self.run_dir, self.file, self.why, self.flag = Path(run_dir), file, why, flag
        super().__init__(f"{flag + ' ' if flag else ''}{Path(run_dir) / file} {why}")


# ------------------------------------------------------------------ run.json
def write_record(run_dir: Path, settings: RunSettings, resumes: Sequence[dict[str, Any]] = ()) -> None:
    """run.json: the settings (RunSettings.to_dict) and the resumes so far, written whole."""
    write_json_whole(run_dir / RECORD_FILE, {**settings.to_dict(), RESUMES: list(resumes)})


def read_record(run_dir: Path, flag: str = "") -> tuple[RunSettings, dict[str, Any], list[dict[str, Any]]]:
    """(settings, the record without its resumes, the resumes) of run.json; RunRefused names the file."""
    path = run_dir / RECORD_FILE
    if not path.is_file():
        raise RunRefused(run_dir, RECORD_FILE, "is missing (is it a run directory?)", flag)
    try:
        record = read_json(path, "run record")
    except ValueError as err:
        raise RunRefused(run_dir, RECORD_FILE, _clause(err, path), flag) from None
    resumes = record.pop(RESUMES, [])
    try:
        settings = RunSettings.from_dict(record, where=str(path))
    except (ValueError, TypeError) as err:
        raise RunRefused(run_dir, RECORD_FILE, f"is not a run's settings: {_clause(err, path)}", flag) from None
    return settings, record, resumes if isinstance(resumes, list) else []


def _clause(err: Exception, path: Path) -> str:
    """An error's text without the path it starts with (the refusal names the run and file itself)."""
    text = str(err)
    for prefix in (f"{path}: ", f"{path} "):
        text = text.removeprefix(prefix)
    return text


# ------------------------------------------------------------------ results.csv
@dataclass(frozen=True)
class ResultRows:
    """results.csv read row by row: `rows` the whole ones (a DataFrame, as pandas reads them), `bad` the
    (line number, why) of each row cut mid-line or corrupted, `last_whole_steps` the env steps of the
    last whole row (None when there is none)."""

    rows: pd.DataFrame
    bad: list[tuple[int, str]] = field(default_factory=list)
    header: list[str] = field(default_factory=list)

    @property
    def last_whole_steps(self) -> int | None:
        return int(self.rows.env_steps.iloc[-1]) if len(self.rows) else None


def read_results(run_dir: Path, flag: str = "") -> ResultRows:
    """results.csv of `run_dir`, validated row by row; a missing file, a foreign header or bytes that are
    not text are RunRefused (the rows themselves are judged by the caller: `bad`)."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        raise RunRefused(run_dir, RESULTS_FILE, "is missing", flag)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RunRefused(run_dir, RESULTS_FILE, "is not text (corrupted)", flag) from None
    lines = text.splitlines(keepends=True)
    header = next(csv.reader([lines[0]])) if lines else []
    missing = [k for k in (*ROW_KEYS, "return_mean") if k not in header]
    if missing or not lines[0].endswith("\n"):
        raise RunRefused(
            run_dir, RESULTS_FILE, f"has no results header (lacks {', '.join(missing) or 'its end'})", flag
        )
    good, bad = [], []
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        why = _bad_row(line, header)
        if why:
            bad.append((number, why))
        else:
            good.append(line)
    rows = pd.read_csv(io.StringIO(lines[0] + "".join(good)))
    return ResultRows(rows=rows, bad=bad, header=header)


def _bad_row(line: str, header: list[str]) -> str | None:
    """Why a results.csv line is not a whole row (None when it is)."""
    if not line.endswith("\n"):
        return "is cut mid-row (it does not end its line)"
    fields = next(csv.reader([line]))
    if len(fields) != len(header):
        return f"is cut or corrupted ({len(fields)} of {len(header)} fields)"
    row = dict(zip(header, fields))
    if row["phase"] not in PHASES:
        return f"is corrupted (phase {row['phase']!r})"
    for key, kind in (("seed", int), ("env_steps", int), ("return_mean", float)):
        try:
            kind(row[key] or "nan" if key == "return_mean" else row[key])  # pandas writes a NaN as nothing
        except ValueError:
            return f"is corrupted ({key} {row[key]!r})"
    if not row["agent"] or not row["scenario"]:
        return "is corrupted (no agent or scenario)"
    return None


def rewind_results(run_dir: Path, env_steps: int) -> list[str]:
    """On resume from a checkpoint at `env_steps`: drop from results.csv the rows a resumed run logs
    again (training evaluations after the checkpoint, any final and baseline rows) and every row cut
    mid-line or corrupted (a kill or a full disk while it was written), so the resumed run appends to
    what the checkpoint had seen, once. Returns one line per thing dropped (nothing vanishes unsaid)."""
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return []
    results = read_results(run_dir, "--resume")
    rows, notes = results.rows, []
    for number, why in results.bad:
        notes.append(f"{path}: line {number} {why}: dropped")
    if results.bad and (results.last_whole_steps or 0) < env_steps:
        notes.append(
            f"{path}: evaluations logged after env step {results.last_whole_steps or 0:,} and before the checkpoint "
            f"at {env_steps:,} are lost with that row (TensorBoard still has them); the run goes on from the checkpoint"
        )
    keep = (rows.phase == "train") & (rows.env_steps <= env_steps)
    if (~keep).any():
        dropped = rows[~keep]
        what = [f"{p} at {s:,}" for p, s in zip(dropped.phase, dropped.env_steps)]
        notes.append(
            f"{path}: {len(dropped)} rows logged after the checkpoint at {env_steps:,} env steps dropped "
            f"({', '.join(what)}): the resumed run measures them again"
        )
    if notes:
        write_whole(path, lambda tmp: rows[keep].to_csv(tmp, index=False))
    return notes


# ------------------------------------------------------------------ the loader
@dataclass(frozen=True)
class Run:
    """A run directory as its files say: settings (run.json), record (run.json without its resumes),
    resumes, status (status.json's record), results (results.csv's whole rows; None where not read) and
    checkpoint_steps (checkpoint/state.json's env steps; None without a checkpoint)."""

    run_dir: Path
    settings: RunSettings
    record: dict[str, Any]
    resumes: list[dict[str, Any]]
    status: dict[str, Any]
    results: pd.DataFrame | None
    checkpoint_steps: int | None

    @property
    def final(self) -> pd.Series:
        """The final evaluation's row of results.csv."""
        assert self.results is not None
        return self.results[self.results.phase == "final"].iloc[-1]


def checkpoint_state(run_dir: Path, name: str = CHECKPOINT, flag: str = "") -> dict[str, Any] | None:
    """A checkpoint's state.json (env_steps, iteration, ...), None where there is no checkpoint. A checkpoint
    left as <name>.old by a kill between the two renames of a save is put back first."""
    recover_checkpoint(run_dir / name)
    path = run_dir / name / "state.json"
    if not path.is_file():
        return None
    try:
        state = read_json(path, "checkpoint state")
    except ValueError as err:
        raise RunRefused(run_dir, f"{name}/state.json", _clause(err, path), flag) from None
    if not isinstance(state.get("env_steps"), int) or not isinstance(state.get("iteration", 0), int):
        raise RunRefused(run_dir, f"{name}/state.json", "lacks env_steps or iteration: not a checkpoint", flag)
    return state


def recover_checkpoint(path: Path) -> None:
    """A save swaps checkpoint -> checkpoint.old, then checkpoint.tmp -> checkpoint: a kill between the two
    leaves only the .old one, which is the last whole checkpoint. Put it back (and drop a torn .tmp)."""
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.is_dir():
        old.rename(path)


def load_run(
    run_dir: str | Path,
    *,
    flag: str = "",
    finished: bool = True,
    checkpoint: bool | None = True,
    same_dynamics: bool = True,
) -> Run:
    """Read a run directory, refusing (RunRefused: one line naming the run, the file and why) what a reader
    cannot trust. `finished`: the run must have finished, with whole, consistent results (False: --resume,
    which reads the checkpoint and rewinds the results itself). `checkpoint`: True, a trainable run must have
    one (to restore it); None, it is checked where present; False, not read. `same_dynamics`: refuse a run
    whose scenario has changed since (a policy measured on today's dynamics; compare labels such runs
    instead). `flag`: what the user gave (--load, --ppo-run, ...), to start the line with."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"{flag + ' ' if flag else ''}no run directory at {run_dir}")
    settings, record, resumes = read_record(run_dir, flag)
    if same_dynamics and (changed := changed_dynamics(record)):
        raise RunRefused(
            run_dir,
            RECORD_FILE,
            f"records '{settings.scenario}' as it was when the run was trained; the scenario has changed since "
            f"(in {', '.join(changed)}), so it cannot be resumed or measured as a run of today's: retrain it",
            flag,
        )
    if same_dynamics and (change := scenario_file_change(record)) is not None:  # another world now
        raise RunRefused(run_dir, RECORD_FILE, f"records a scenario file: {change}; retrain it", flag)
    status = read_status(run_dir)
    state = checkpoint_state(run_dir, flag=flag) if checkpoint is not False and settings.spec.trains else None
    if checkpoint and settings.spec.trains and state is None:
        raise RunRefused(run_dir, f"{CHECKPOINT}/state.json", "is missing: the run has no checkpoint to load", flag)
    if checkpoint and not settings.spec.trains:
        raise RunRefused(run_dir, RECORD_FILE, f"is a run of '{settings.agent}', which has no checkpoint to load", flag)
    steps = state["env_steps"] if state else None
    if not finished:
        return Run(run_dir, settings, record, resumes, status, None, steps)
    _check_finished(run_dir, settings, status, flag)
    results = read_results(run_dir, flag)
    _check_results(run_dir, settings, status, results, flag)
    run = Run(run_dir, settings, record, resumes, status, results.rows, steps)
    if settings.spec.trains and steps is not None:
        _check_checkpoint(run, flag)
    return run


def _check_finished(run_dir: Path, settings: RunSettings, status: dict[str, Any], flag: str) -> None:
    what = status["status"]
    if what == "finished":
        return
    go_on = (
        f"continue it with: python experiments/run.py --resume {run_dir}" if settings.spec.trains else "run it again"
    )
    if what == "unknown":
        raise RunRefused(run_dir, "status.json", "is missing or unreadable: the run never got past its start-up", flag)
    if what == "running":
        holder = lock_holder(run_dir)
        if holder:
            raise RunRefused(run_dir, "status.json", f"says running: it is still training ({holder})", flag)
        raise RunRefused(
            run_dir, "status.json", f"says running, but no process holds the run: it was killed; {go_on}", flag
        )
    done = status.get("env_steps")
    where = f" at {done:,} of {settings.steps:,} env steps" if isinstance(done, int) and settings.spec.trains else ""
    reason = f" ({status['reason']})" if status.get("reason") else ""
    raise RunRefused(run_dir, "status.json", f"says {what}{where}{reason}: not finished; {go_on}", flag)


def _check_results(
    run_dir: Path, settings: RunSettings, status: dict[str, Any], results: ResultRows, flag: str
) -> None:
    if results.bad:
        number, why = results.bad[0]
        raise RunRefused(run_dir, RESULTS_FILE, f"line {number} {why}", flag)
    rows = results.rows
    finals = rows.index[rows.phase == "final"]
    if not len(finals):
        raise RunRefused(
            run_dir, RESULTS_FILE, "has no final evaluation although the run finished: its last rows are lost", flag
        )
    if len(finals) > 1:
        raise RunRefused(run_dir, RESULTS_FILE, f"holds {len(finals)} final evaluations, not one: inconsistent", flag)
    if not (rows.phase.loc[finals[0] :] == "baseline").any():
        raise RunRefused(
            run_dir,
            RESULTS_FILE,
            "lacks the random baseline written after the final evaluation: its last row is lost",
            flag,
        )
    final = rows.loc[finals[0]]
    if not math.isfinite(float(final.return_mean)):
        raise RunRefused(run_dir, RESULTS_FILE, f"has a final return_mean of {final.return_mean}: refused", flag)
    said = status.get("return_mean")
    if isinstance(said, (int, float)) and not math.isclose(float(said), float(final.return_mean), rel_tol=1e-6):
        raise RunRefused(
            run_dir,
            RESULTS_FILE,
            f"has a final return_mean of {final.return_mean:.6g}, status.json {said:.6g}: the files disagree",
            flag,
        )
    said = status.get("env_steps")
    if isinstance(said, int) and said != int(final.env_steps):
        raise RunRefused(
            run_dir,
            RESULTS_FILE,
            f"has its final evaluation at {int(final.env_steps):,} env steps, status.json at {said:,}: "
            "the files disagree",
            flag,
        )


def _check_checkpoint(run: Run, flag: str) -> None:
    """The checkpoint (or, keeping the best, the best snapshot) is the policy the final evaluation measured."""
    evaluated, steps = int(run.final.env_steps), run.checkpoint_steps
    assert steps is not None
    name = CHECKPOINT
    if run.settings.keep_best:
        best = checkpoint_state(run.run_dir, BEST, flag)
        name, snapshot = BEST, (best or {}).get("env_steps")
        if snapshot != evaluated:
            raise RunRefused(
                run.run_dir,
                f"{BEST}/state.json",
                f"is at {snapshot} env steps, the final evaluation at {evaluated:,}: "
                "the best snapshot is not the policy that was evaluated",
                flag,
            )
        trained = run.results[run.results.phase == "train"].env_steps.max()
        if pd.notna(trained) and steps < trained:
            raise RunRefused(
                run.run_dir,
                f"{CHECKPOINT}/state.json",
                f"is at {steps:,} env steps, older than the evaluations "
                f"in results.csv (up to {int(trained):,}): inconsistent",
                flag,
            )
    elif steps != evaluated:
        age = "older" if steps < evaluated else "newer"
        raise RunRefused(
            run.run_dir,
            f"{name}/state.json",
            f"is at {steps:,} env steps, {age} than the final evaluation in "
            f"results.csv ({evaluated:,}): the checkpoint is not the policy that was evaluated",
            flag,
        )
    if steps < run.settings.steps:
        raise RunRefused(
            run.run_dir,
            f"{CHECKPOINT}/state.json",
            f"is at {steps:,} env steps, short of the {run.settings.steps:,} "
            "that run.json records: the run did not train its budget",
            flag,
        )


def find_runs(roots: Iterable[Path], **checks: Any) -> tuple[list[Run], list[RunRefused]]:
    """Every run directory under `roots` (a folder holding run.json or results.csv), loaded with `checks`
    (load_run's): (the runs, the refusals, one per directory that was refused). A root that does not exist
    is a ValueError."""
    runs, refused = [], []
    for root in roots:
        root = Path(root)
        if not root.exists():
            raise ValueError(f"no such directory: {root}")
        dirs = {p.parent for name in (RECORD_FILE, RESULTS_FILE) for p in root.rglob(name)}
        for run_dir in sorted(dirs):
            try:
                runs.append(load_run(run_dir, **checks))
            except RunRefused as err:
                refused.append(err)
    return runs, refused


def resume_entry(from_steps: int, settings: RunSettings) -> dict[str, Any]:
    """run.json's record of one resume: when, from the checkpoint's env steps, to which budget, where."""
    return dict(
        time=time.strftime("%Y-%m-%d %H:%M:%S"),
        from_env_steps=from_steps,
        steps=settings.steps,
        device=settings.device,
        final_eval_users=settings.final_eval_users,
    )


def say(lines: Iterable[str]) -> None:
    for line in lines:
        print(line, file=sys.stderr)
