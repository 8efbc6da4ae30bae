"""Run directories on disk: a location checked for writing before any work, JSON records read with errors
that name the file, files written whole (a temporary file in the same directory, then os.replace), the
status mark (running / finished / failed / interrupted) each run carries, and the lock that lets one
process at a time work in a run directory."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


# ---------------------------------------------------------------- whole files
TMP_SUFFIX = ".tmp"  # a file being written; never read, and removed when its writing fails


def write_whole(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """`write(tmp)` into a temporary file next to `path`, then swap it in with os.replace: a reader (or a
    kill, or a full disk) sees the old file or the new one, never half of one. The temporary file is
    removed when writing fails, and the error goes on."""
    path = Path(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text_whole(path: str | Path, text: str) -> Path:
    """`text` into `path`, whole or not at all (`write_whole`)."""
    return write_whole(path, lambda tmp: tmp.write_text(text))


def write_json_whole(path: str | Path, data: Any) -> Path:
    """`data` as indented JSON into `path`, whole or not at all."""
    return write_text_whole(path, json.dumps(data, indent=2, default=str) + "\n")


@contextmanager
def staged(out: str | Path, folders: tuple[str, ...] = ()) -> Iterator[Path]:
    """A report written all or nothing: the block writes its files into a staging folder inside `out`
    (same file system); when it ends without an error, each file replaces its namesake in `out` with
    os.replace, and each of `folders` (e.g. a report's TensorBoard tb/) replaces the folder of that name
    whole; on any error (a NaN refused, a plot that fails, a full disk) nothing is replaced: `out` keeps
    what it held. The staging folder is removed either way.

      with staged(out) as stage:
          table.to_csv(stage / "comparison.csv")
          (stage / "comparison.md").write_text(text)
    """
    out = Path(out)
    stage = Path(tempfile.mkdtemp(prefix=".staging-", dir=out))
    try:
        yield stage
        for name in folders:
            if (stage / name).is_dir():
                shutil.rmtree(out / name, ignore_errors=True)
                os.replace(stage / name, out / name)
        for path in sorted(p for p in stage.rglob("*") if not p.is_dir()):
            target = out / path.relative_to(stage)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def remove_torn(directory: Path) -> list[Path]:
    """Remove the temporary files and folders (*.tmp) a write cut short left in `directory` (a kill -9 while
    `write_whole` or a checkpoint save was under way); they are never read. Returns what was removed."""
    torn = sorted(Path(directory).glob("*" + TMP_SUFFIX))  # pathlib's * matches dot files too
    for path in torn:
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    return torn


def no_space(err: BaseException) -> bool:
    """Whether `err` is a full disk (or quota): what a run stopped by it says, and how it can go on."""
    return isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)


# ---------------------------------------------------------------- status
STATUS_FILE = "status.json"  # running / finished / failed / interrupted, with the reason
STATUS_PAD = 1024  # status.json is padded to this many bytes: on a full disk it is rewritten in place


def write_status(run_dir: Path, status: str, **details: Any) -> None:
    """Mark a run directory: atomically (a kill mid-write leaves the previous status); on a full disk,
    where no new file can be made, by rewriting status.json in place within the bytes it already holds
    (it is padded to STATUS_PAD), so that a run stopped by a full disk does not stay marked running."""
    text = json.dumps(dict(status=status, time=time.strftime("%Y-%m-%d %H:%M:%S"), **details), default=str)
    text = text.ljust(STATUS_PAD) + "\n" if len(text) < STATUS_PAD else text + "\n"
    path = run_dir / STATUS_FILE
    try:
        write_text_whole(path, text)
    except OSError as err:
        if not (no_space(err) and path.is_file() and path.stat().st_size >= len(text.encode())):
            raise
        with open(path, "r+") as f:  # the blocks are there already: no new space needed
            f.write(text)
            f.truncate()


def read_status(run_dir: str | Path) -> dict[str, Any]:
    """The status record of a run directory ({"status": "unknown"} where it has none or it is unreadable)."""
    path = Path(run_dir) / STATUS_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {"status": "unknown"}
    return record if isinstance(record, dict) and "status" in record else {"status": "unknown"}


def run_status(run_dir: str | Path) -> str:
    """The status a run directory was last marked with ('unknown' where it has none)."""
    return str(read_status(run_dir)["status"])


# ---------------------------------------------------------------- the run lock
LOCK_FILE = ".lock"  # held (flock) by the process working in a run directory; its pid is written in it


class RunLock:
    """One process at a time in a run directory: an exclusive flock on <run_dir>/.lock, held from the
    run's start to its end. The kernel drops it when the process ends, however it ends (kill -9
    included), so a dead holder never keeps a run from being resumed. `holder` names a live holder."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self, flag: str = "--resume") -> RunLock:
        """Take the lock, or raise ValueError naming the process that holds it (and `flag`, what the user gave)."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = _lock_text(self.path)
            raise ValueError(
                f"{flag} {self.path.parent}: the run is in use by {holder or 'another process'}; "
                "one process at a time may work in a run directory"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {os.uname().nodename} since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the descriptor drops the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire() if self.fd is None else self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _lock_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def lock_holder(run_dir: str | Path) -> str | None:
    """Who holds a run directory's lock now ("pid 123 on host since ..."), or None when no live process does."""
    path = Path(run_dir) / LOCK_FILE
    if not path.is_file():
        return None
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _lock_text(path) or "another process"
    finally:
        os.close(fd)  # a shared lock taken here is dropped with the descriptor
    return None
