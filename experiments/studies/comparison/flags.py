"""The flags of experiments/compare.py."""

from __future__ import annotations

import argparse
from pathlib import Path


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """compare.py's flags (`description`: its --help text)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("roots", nargs="+", type=Path, help="run directories or roots (e.g. runs/)")
    parser.add_argument("--out", type=Path, default=Path("reports/compare"), help="output directory")
    parser.add_argument("--reference", default="oracle-lookahead", help="agent that regret is measured against")
    parser.add_argument(
        "--from-day",
        type=int,
        metavar="T",
        help="lifetime scenarios: add minutes watched from day T on and retention given day T "
        "(e.g. T = the day supervised models start serving)",
    )
    parser.add_argument(
        "--after-days",
        type=int,
        nargs="+",
        default=None,
        metavar="D",
        help="with --from-day: the days after T that retention given day T is read at (default 7 14 21)",
    )
    return parser
