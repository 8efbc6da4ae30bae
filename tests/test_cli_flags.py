"""Every CLI's flags equal the committed snapshot (tests/data/cli_flags.json): moving the library under
the entry points must not change a flag's spelling, destination, default, choices, arity or type.

Each CLI runs in-process with runpy (the CLI is not imported as a module) until its parser parses: the
parser is caught there, before any work, and described. Re-record the snapshot after a deliberate change
of flags with `python tests/test_cli_flags.py` and commit it with that change.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "data" / "cli_flags.json"
CLIS = ("run", "compare", "stress", "validity", "offline", "sweep", "bench", "calibrate")


class _Parsed(Exception):
    """Raised by the patched parse_args: carries the CLI's parser out before any work starts."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.parser = parser


def cli_parser(name: str) -> argparse.ArgumentParser:
    """The parser experiments/<name>.py builds, caught at its parse_args call."""

    def caught(self: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        raise _Parsed(self)

    original, argv = argparse.ArgumentParser.parse_args, sys.argv
    argparse.ArgumentParser.parse_args = caught
    sys.argv = [f"experiments/{name}.py"]
    try:
        runpy.run_path(str(ROOT / "experiments" / f"{name}.py"), run_name="__main__")
    except _Parsed as parsed:
        return parsed.parser
    finally:
        argparse.ArgumentParser.parse_args, sys.argv = original, argv
    raise AssertionError(f"experiments/{name}.py finished without parsing its arguments")


def describe(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """Each flag and positional of `parser` (and of its subcommands) as plain JSON."""
    flags, subcommands = [], {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        if isinstance(action, argparse._SubParsersAction):
            subcommands = {name: describe(sub) for name, sub in action.choices.items()}
            flags.append(dict(subcommands=action.dest, required=action.required))
            continue
        flags.append(
            dict(
                option_strings=list(action.option_strings),
                dest=action.dest,
                action=type(action).__name__,
                default=_plain(action.default),
                choices=None if action.choices is None else [repr(c) for c in action.choices],
                nargs=action.nargs,
                required=action.required,
                type=getattr(action.type, "__name__", repr(action.type)) if action.type is not None else None,
                metavar=action.metavar,
            )
        )
    return dict(flags=flags, **({"subcommands": subcommands} if subcommands else {}))


def _plain(value: Any) -> Any:
    """A default as JSON holds it, its type kept where JSON would lose it (a tuple, a Path)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return f"Path({str(value)!r})"
    return repr(value)


def record() -> dict[str, Any]:
    return {name: describe(cli_parser(name)) for name in CLIS}


def dumps(snapshot: dict[str, Any]) -> str:
    """The snapshot as JSON with one flag a line (a change shows as one line of a diff)."""
    lines = ["{"]
    for i, (name, cli) in enumerate(snapshot.items()):
        lines.append(f" {json.dumps(name)}: {_dumps_cli(cli, 1)}" + ("," if i < len(snapshot) - 1 else ""))
    return "\n".join(lines + ["}"]) + "\n"


def _dumps_cli(cli: dict[str, Any], depth: int) -> str:
    pad = " " * (depth + 1)
    flags = ",\n".join(pad + " " + json.dumps(f) for f in cli["flags"])
    out = "{\n" + pad + '"flags": [\n' + flags + "\n" + pad + "]"
    if "subcommands" in cli:
        subs = ",\n".join(f"{pad}  {json.dumps(n)}: {_dumps_cli(s, depth + 3)}" for n, s in cli["subcommands"].items())
        out += ",\n" + pad + '"subcommands": {\n' + subs + "\n" + pad + "}"
    return out + "\n" + " " * depth + "}"


@pytest.mark.parametrize("name", CLIS)
def test_cli_flags_match_the_snapshot(name):
    expected = json.loads(SNAPSHOT.read_text())[name]
    assert describe(cli_parser(name)) == expected


def test_the_snapshot_is_not_empty():
    # A snapshot recorded from parsers that were not caught would compare nothing.
    snapshot = json.loads(SNAPSHOT.read_text())
    assert set(snapshot) == set(CLIS)
    assert all(len(s["flags"]) >= 5 for name, s in snapshot.items() if name != "bench")
    assert set(snapshot["bench"]["subcommands"]) == {"sim", "encoder", "train", "realdata"}
    assert all(len(s["flags"]) >= 2 for s in snapshot["bench"]["subcommands"].values())


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    SNAPSHOT.parent.mkdir(parents=True, exist_ok=True)
    SNAPSHOT.write_text(dumps(record()))
    print(f"wrote {SNAPSHOT.relative_to(ROOT)}")
