"""The README is a front door and the documentation site holds the rest: the README is short, every page and plot
under docs/ is part of the site, and nothing committed there names a folder of the machine it was measured on.
(`mkdocs build --strict`, which checks links, anchors and API references, runs in .ci/run: it takes a while.)"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml

from experiments.core.commands import repo_relative

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
MAX_README_LINES = 250
# Pages under docs/ deliberately left out of the site's nav (none today).
NOT_IN_NAV: set[str] = set()
# A path of a machine: a home, a scratch or a work folder from the root, not `../tmp/` or a word ending in `/tmp/`.
MACHINE_PATH = re.compile(rb"(?<![\w.~-])/(?:work|root|tmp|home|Users)/")
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)")
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def nav_pages(nav) -> list[str]:
    """Every page file the mkdocs.yml nav names, in order."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in nav_pages(value)]
    return [page for item in nav for page in nav_pages(item)]


def machine_paths(data: bytes) -> list[str]:
    return [m.group().decode() for m in MACHINE_PATH.finditer(data)]


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= MAX_README_LINES
    # .ci/run runs the README's test command: it stays there, in a block of its own.
    assert "```bash\npython -m pytest -q\n```" in "\n".join(lines)


def test_the_readme_links_to_files_that_exist():
    readme = (ROOT / "README.md").read_text()
    targets = [t.split("#")[0] for t in LINK.findall(readme) + IMAGE.findall(readme) if "://" not in t]
    assert len(targets) > 10
    assert [t for t in targets if not (ROOT / t).exists()] == []


def test_every_docs_page_is_in_the_nav_and_every_nav_entry_exists():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert len(nav) == len(set(nav))  # a page has one place
    assert [p for p in nav if p not in pages] == []
    assert sorted(pages - set(nav) - NOT_IN_NAV) == []


def test_every_plot_under_docs_is_shown_on_a_page():
    shown = set()
    for page in DOCS.rglob("*.md"):
        for target in IMAGE.findall(page.read_text()):
            shown.add(Path(os.path.normpath(page.parent / target)).relative_to(DOCS).as_posix())
    plots = {p.relative_to(DOCS).as_posix() for ext in ("png", "svg") for p in DOCS.rglob(f"*.{ext}")}
    assert len(plots) > 20
    assert sorted(plots - shown) == []
    assert sorted(p for p in shown if not (DOCS / p).is_file()) == []


def test_no_docs_file_names_a_folder_of_the_machine():
    files = [p for p in (*DOCS.rglob("*"), ROOT / "README.md", ROOT / "mkdocs.yml") if p.is_file()]
    assert len(files) > 100
    found = {str(p.relative_to(ROOT)): machine_paths(p.read_bytes()) for p in files}
    assert {k: v for k, v in found.items() if v} == {}


def test_the_machine_path_check_finds_what_it_looks_for():
    # Control for the check above, on the lines the validity report wrote before its commands were made relative.
    assert machine_paths(b"--history-runs /work/camp/runs/mixed/ppo/0-1 --out /tmp/x") == ["/work/", "/tmp/"]
    assert machine_paths(b"in ~/x, /home/u/y and `/root/.cache/z`") == ["/home/", "/root/"]
    assert machine_paths(b"--history-runs ../camp/runs/mixed/ppo/0-1 --out ../../tmp/x docs/work/x") == []


def test_a_recorded_command_is_written_relative_to_the_repository(tmp_path):
    root = tmp_path / "repo"
    command = f"python experiments/validity.py --out {root}/docs/validity --history-runs {tmp_path}/runs/a --seeds 0 1"
    assert repo_relative(command, root) == (
        "python experiments/validity.py --out docs/validity --history-runs ../runs/a --seeds 0 1"
    )
    assert repo_relative(f"python experiments/stress.py --out={root}/x -n 2", root) == (
        "python experiments/stress.py --out=x -n 2"
    )
    assert repo_relative("python experiments/offline.py --out runs/offline", root) == (
        "python experiments/offline.py --out runs/offline"
    )
