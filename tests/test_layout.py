"""The code layout the README describes: entry points (experiments/<cli>.py) are thin, and nothing imports one
(the library is imported from experiments.core and experiments.studies; tests run a CLI with runpy)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLIS = ("run", "compare", "stress", "validity", "offline", "sweep", "bench", "calibrate")
MAX_CLI_LINES = 100


def imported_modules(path: Path) -> set[str]:
    """Every module an `import` or `from ... import` in `path` names (`from pkg import name` counts as
    pkg.name too: the name may be a module)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def test_nothing_imports_an_entry_point():
    clis = {f"experiments.{name}" for name in CLIS}
    sources = [p for d in ("simulator", "envs", "agents", "experiments", "tests") for p in (ROOT / d).rglob("*.py")]
    assert len(sources) > 50
    offenders = {str(p.relative_to(ROOT)): sorted(imported_modules(p) & clis) for p in sources}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_entry_points_are_thin():
    lengths = {name: len((ROOT / "experiments" / f"{name}.py").read_text().splitlines()) for name in CLIS}
    assert {name: n for name, n in lengths.items() if n > MAX_CLI_LINES} == {}
    # Every other module of experiments/ is library, in a package.
    assert sorted(p.stem for p in (ROOT / "experiments").glob("*.py")) == sorted((*CLIS, "__init__"))


def test_the_import_check_sees_an_entry_point_import(tmp_path):
    # Control for the check above: an import of a CLI, in each spelling, is found.
    path = tmp_path / "x.py"
    path.write_text("from experiments import run\nimport experiments.stress\nfrom experiments.compare import main\n")
    assert {"experiments.run", "experiments.stress", "experiments.compare"} <= imported_modules(path)
