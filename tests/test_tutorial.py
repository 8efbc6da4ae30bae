"""The tutorial (docs/extending.md) works: its files and commands, read from the page itself so the page
cannot drift, run in a folder of their own at tiny sizes (the commands' size flags dropped, --smoke
added), and every command succeeds with the outputs the page points at."""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"
# The flags that set sizes, with their values: --smoke sizes stand in for them (explicit flags win over it).
SIZE_FLAGS = ("--steps", "--eval-interval", "--final-eval-users", "--eval-users", "--users")
NO_SMOKE = ("compare",)  # reads runs, has no sizes


def tutorial() -> tuple[dict[str, str], list[tuple[str, list[str]]]]:
    """The page's files (title -> text) and commands (CLI name, argv), in the page's order."""
    text = PAGE.read_text()
    files = dict(re.findall(r'```\w+ title="([^"]+)"\n(.*?)```', text, re.S))
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            if line.startswith("python -m experiments."):
                words = shlex.split(line)
                commands.append((words[2].removeprefix("experiments."), words[3:]))
    return files, commands


def tiny(name: str, argv: list[str]) -> list[str]:
    out, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in SIZE_FLAGS:
            skip = True
        else:
            out.append(word)
    return out if name in NO_SMOKE else [*out, "--smoke"]


def forget(*modules: str) -> None:
    """The tutorial's modules out of this process (another test's folder may hold others of their names)."""
    from agents import registry

    for module in modules:
        sys.modules.pop(module, None)
        for path in [p for p in registry._BY_PATH if p.startswith(f"{module}:")]:
            del registry._BY_PATH[path]


def test_the_page_holds_the_tutorial():
    files, commands = tutorial()
    assert set(files) == {"my_rec.py", "rush.py", "rush.yaml"}
    assert [c for c, _ in commands] == ["run", "run", "run", "compare", "stress", "validity"]
    lines = {name: [x for x in text.splitlines() if x.strip()] for name, text in files.items()}
    assert len(lines["my_rec.py"]) <= 32 and len(lines["rush.py"]) <= 40  # what the page promises


def test_the_tutorial_runs_end_to_end_at_tiny_sizes(cli, tmp_path, monkeypatch):
    files, commands = tutorial()
    monkeypatch.chdir(tmp_path)  # the researcher's own folder
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    try:
        for name, argv in commands:
            status = cli(name, tiny(name, argv))
            assert status in ((0, 1) if name == "validity" else (0,)), f"{name} {' '.join(argv)}: exit {status}"
    finally:
        forget("my_rec", "rush")
    compared = pd.read_csv(tmp_path / "reports" / "compare" / "comparison.csv")
    assert {"my_rec:Finisher", "ppo", "sasrec"} == set(compared.agent)
    grid = pd.read_csv(tmp_path / "reports" / "stress" / "grid.csv")
    assert {"my_rec:Finisher", "sasrec"} <= set(grid.agent) and {"cognitive", "shock"} <= set(grid.family)
    drift = pd.read_csv(tmp_path / "reports" / "validity" / "drift.csv")
    assert set(drift.preset) == {"rush.yaml"} and sorted(drift.magnitude.unique()) == [0.0, 1.0, 2.0]
    assert (tmp_path / "reports" / "validity" / "report.md").is_file()


@pytest.mark.parametrize("settings, message", [("recent: 0", "algo.recent must be >= 1, got 0")])
def test_the_tutorials_settings_are_checked_in_one_line(cli, tmp_path, monkeypatch, capsys, settings, message):
    files, _ = tutorial()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my_rec.py").write_text(files["my_rec.py"])
    (tmp_path / "run.yaml").write_text(f"algo: {{{settings}}}\n")
    try:
        assert cli("run", ["--agent", "my_rec:Finisher", "--config", "run.yaml", "--smoke"]) == 2
    finally:
        forget("my_rec")
    assert capsys.readouterr().err.strip() == f"error: {message}"
