"""Run directories on disk: a location checked for writing before any work, JSON records read with errors
that name the file, and the status mark (running / finished / failed / interrupted) each run carries."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any


def writable_dir(path: str | Path, flag: str) -> Path:
    """`path` as a directory this process can write into (created when missing); else a ValueError
    naming the flag and the reason, before any work starts."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as err:
        raise ValueError(f"{flag} {path} cannot be written: {err.strerror or err}") from None
    return path


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`; a missing, truncated or foreign file is a ValueError naming it."""
    if not path.is_file():
        raise ValueError(f"no {what} at {path}")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}): a truncated or corrupted {what}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds a {type(data).__name__}, not the JSON object a {what} is")
    return data


STATUS_FILE = "status.json"  # running / finished / failed / interrupted, with the reason


def write_status(run_dir: Path, status: str, **details: Any) -> None:
    """Mark a run directory (atomically: a kill mid-write leaves the previous status)."""
    tmp = run_dir / (STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(dict(status=status, time=time.strftime("%Y-%m-%d %H:%M:%S"), **details)))
    os.replace(tmp, run_dir / STATUS_FILE)


def run_status(run_dir: str | Path) -> str:
    """The status a run directory was last marked with ('unknown' for runs older than the marks)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        return str(json.loads(path.read_text()).get("status", "unknown"))
    except (OSError, json.JSONDecodeError, AttributeError):
        return "unknown"
