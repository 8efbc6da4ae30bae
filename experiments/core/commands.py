"""The command line a report records, written relative to the repository: a committed report (docs/) says how to
measure it again without naming the folders of the machine it was measured on."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_relative(command: str, root: str | Path = REPO_ROOT) -> str:
    """`command` with every absolute path among its space-separated arguments (`/a/b`, or the value of
    `--flag=/a/b`) written relative to the repository root `root`, where the CLIs run: `docs/validity`
    for a path inside it, `../runs/x` for one beside it. The rest is kept as given."""

    def relative(word: str) -> str:
        flag, sep, value = word.partition("=") if word.startswith("-") else ("", "", word)
        if not os.path.isabs(value):
            return word
        return f"{flag}{sep}{Path(os.path.relpath(value, root)).as_posix()}"

    return " ".join(relative(word) for word in command.split(" "))
