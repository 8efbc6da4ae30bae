"""The one markdown-table writer: every report's tables (compare, stress, validity, offline, sweeps,
calibration) go through `markdown_table`, each study formatting its own cells; and `read_table`, which
reads a report's CSV back with an error that names the file and the flag that pointed at it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table: a line of the `header` cells, the separator, then one line per row of `rows`
    (cells written with str(): format them first)."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def frame_markdown(frame: pd.DataFrame, fmt: str = ".3f") -> str:
    """A markdown table of a DataFrame with a named index (its rows) and columns: finite floats in
    `fmt`, missing values empty."""
    names = [str(n) for n in (frame.index.names if frame.index.nlevels > 1 else [frame.index.name or ""])]
    rows = []
    for key, row in frame.iterrows():
        keys = key if isinstance(key, tuple) else (key,)
        cells = [
            f"{v:{fmt}}" if isinstance(v, float) and np.isfinite(v) else ("" if pd.isna(v) else str(v)) for v in row
        ]
        rows.append([*map(str, keys), *cells])
    return markdown_table(names + [str(c) for c in frame.columns], rows)


def read_table(path: Path, flag: str, empty_ok: bool = False) -> pd.DataFrame:
    """A report's CSV table; a file that is not text, not a table, or (unless `empty_ok`) empty is a
    ValueError that names `flag` (what the user gave), the file and why, in one line."""
    try:
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        if empty_ok:
            return pd.DataFrame()
        why = "is empty"
    except UnicodeDecodeError:
        why = "is not text (corrupted)"
    except pd.errors.ParserError as err:
        why = f"is not a readable table ({str(err).strip().splitlines()[-1]})"
    raise ValueError(f"{flag} {path.parent}: {path} {why}")
