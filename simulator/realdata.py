"""Real data from installed packages: MovieLens-100k (the `recbole` wheel) and the Open Bandit
Dataset sample (the `obp` package), read as files, never downloaded, never imported.

Neither package can be installed with its dependencies beside this project's pins (recbole 1.2.1
requires ray <= 2.6.3, the project ray 2.60; obp 0.5.7 requires Python < 3.11 and torch 1.12), so
both are installed for their data files only (`DATA_INSTALL`), and this module finds their folders
with `importlib.util.find_spec` without importing them. MovieLens's licence forbids redistribution:
nothing read here is written into the repository; what the project keeps is derived statistics.

Pure functions returning pandas frames and numpy arrays:

- `load_movielens(max_users=None)` -> MovieLens: interactions (user, item, rating, timestamp; ids
  0-based and dense, in the files' order), item genres [I, G] and the genre names.
- `load_obd(campaign)` -> the OBD sample of one campaign ("random" or "bts"): one row per
  impression with position (0 = top), click and the logging propensity.
- `sequences(interactions)` -> each user's items in time order; `leave_one_out(seqs)` the split.

A missing package is `RealDataUnavailable` (an ImportError: one line naming the install command);
a missing or malformed file a ValueError naming the file.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

DATA_INSTALL = {
    "recbole": 'pip install --no-deps "recbole==1.2.1"',
    "obp": 'pip install --no-deps --ignore-requires-python "obp==0.5.7"',
}
MOVIELENS_DIR = ("dataset_example", "ml-100k")  # inside the recbole package
OBD_DIR = ("dataset", "obd")  # inside the obp package
OBD_CAMPAIGNS = ("random", "bts")
# The 18 genres of ml-100k (the item file also knows 'unknown', on 2 items: they get no topic weight).
GENRES = (
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)


class RealDataUnavailable(ImportError):
    """The package that carries a data set is not installed; the message names the install command."""


def package_dir(package: str) -> Path:
    """The installed folder of `package` (found without importing it), or RealDataUnavailable."""
    if package not in DATA_INSTALL:
        raise ValueError(f"unknown data package {package!r}; known: {', '.join(DATA_INSTALL)}")
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise RealDataUnavailable(
            f"the real-data package '{package}' is not installed: {DATA_INSTALL[package]} (see README: Real data)"
        )
    return Path(locations[0])


def unavailable_reason(*packages: str) -> str | None:
    """None when every package in `packages` is installed, else the first one's install message
    (tests skip with it)."""
    for package in packages:
        try:
            package_dir(package)
        except RealDataUnavailable as err:
            return str(err)
    return None


def _read(path: Path, required: tuple[str, ...], **kwargs) -> pd.DataFrame:
    """A delimited file with its `required` columns, or one ValueError line naming the file."""
    if not path.is_file():
        raise ValueError(f"data file missing: {path} (reinstall the package that carries it)")
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"data file {path} is not readable: {first}") from None
    frame.columns = [str(c).split(":")[0] for c in frame.columns]  # RecBole's typed headers: name:type
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ValueError(f"data file {path} lacks columns {missing}; has {list(frame.columns)[:8]}")
    if frame.empty:
        raise ValueError(f"data file {path} holds no rows")
    return frame


@dataclass(frozen=True)
class MovieLens:
    """ml-100k with dense 0-based ids.

    interactions: DataFrame of M rows (user, item int64; rating float 1-5; timestamp int64 seconds),
      in the file's order; item_ids / user_ids [I] / [U] the raw ids of the dense ones.
    genres [I, G] bool, G = len(GENRES); genre_names the G names.
    """

    interactions: pd.DataFrame
    genres: np.ndarray
    genre_names: tuple[str, ...]
    item_ids: np.ndarray
    user_ids: np.ndarray

    @property
    def n_users(self) -> int:
        return int(self.user_ids.shape[0])

    @property
    def n_items(self) -> int:
        return int(self.item_ids.shape[0])


def movielens_files(root: Path | None = None) -> tuple[Path, Path]:
    """(interactions file, items file) of ml-100k under `root` (default: the recbole package's)."""
    base = (package_dir("recbole") if root is None else Path(root)).joinpath(*MOVIELENS_DIR)
    return base / "ml-100k.inter", base / "ml-100k.item"


def load_movielens(max_users: int | None = None, root: Path | None = None) -> MovieLens:
    """Read ml-100k (RecBole's atomic files: tab-separated, typed headers).

    `max_users`: keep the users with the smallest raw ids only (a small slice for tests); the item
    table keeps every item of the file, so item ids and genres do not depend on the slice.
    """
    if max_users is not None and (isinstance(max_users, bool) or not isinstance(max_users, int) or max_users < 1):
        raise ValueError(f"max_users must be an integer >= 1 or None, got {max_users!r}")
    inter_path, item_path = movielens_files(root)
    inter = _read(inter_path, ("user_id", "item_id", "rating", "timestamp"), sep="\t", dtype=str)
    items = _read(item_path, ("item_id", "class"), sep="\t", dtype=str, keep_default_na=False)
    try:
        users_raw = inter["user_id"].astype(np.int64).to_numpy()
        items_raw = inter["item_id"].astype(np.int64).to_numpy()
        rating = inter["rating"].astype(np.float64).to_numpy()
        timestamp = inter["timestamp"].astype(np.float64).astype(np.int64).to_numpy()
        item_table = items["item_id"].astype(np.int64).to_numpy()
    except (ValueError, TypeError) as err:
        raise ValueError(
            f"data file {inter_path} or {item_path} holds a non-numeric id, rating or time: {err}"
        ) from None
    if not np.all((rating >= 1) & (rating <= 5)):
        raise ValueError(f"data file {inter_path}: ratings must be in [1, 5], got {rating.min()}..{rating.max()}")
    order = np.argsort(item_table, kind="stable")
    item_ids = item_table[order]
    if np.unique(item_ids).size != item_ids.size:
        raise ValueError(f"data file {item_path} lists an item twice")
    dense_item = np.searchsorted(item_ids, items_raw)
    unknown = (dense_item >= item_ids.size) | (item_ids[np.minimum(dense_item, item_ids.size - 1)] != items_raw)
    if unknown.any():
        raise ValueError(f"data file {inter_path} rates item {items_raw[unknown][0]} that {item_path} does not list")
    keep = np.ones(users_raw.size, bool)
    user_ids = np.unique(users_raw)
    if max_users is not None:
        user_ids = user_ids[:max_users]
        keep = np.isin(users_raw, user_ids)
    genres = np.zeros((item_ids.size, len(GENRES)), bool)
    lookup = {g: j for j, g in enumerate(GENRES)}
    for row, classes in zip(order, items["class"].to_numpy()):  # one pass over the 1,682 items
        for g in str(classes).split():
            if g in lookup:
                genres[np.searchsorted(item_ids, item_table[row]), lookup[g]] = True
    frame = pd.DataFrame(
        dict(
            user=np.searchsorted(user_ids, users_raw[keep]).astype(np.int64),
            item=dense_item[keep].astype(np.int64),
            rating=rating[keep],
            timestamp=timestamp[keep],
        )
    )
    return MovieLens(frame, genres, GENRES, item_ids, user_ids)


def obd_file(campaign: str = "random", root: Path | None = None) -> Path:
    """The OBD sample file of `campaign` (all users) under `root` (default: the obp package's)."""
    if campaign not in OBD_CAMPAIGNS:
        raise ValueError(f"OBD campaign must be one of {', '.join(OBD_CAMPAIGNS)}, got {campaign!r}")
    base = (package_dir("obp") if root is None else Path(root)).joinpath(*OBD_DIR)
    return base / campaign / "all" / "all.csv"


def load_obd(campaign: str = "random", root: Path | None = None) -> pd.DataFrame:
    """The OBD sample of one campaign: DataFrame [R rows] with item (int), position (0 = top slot),
    click (0/1) and propensity (the logging policy's probability of the item at that slot).

    In the `random` campaign the logging policy serves uniformly random items at every slot, so the
    click rate per slot there measures the position effect alone."""
    path = obd_file(campaign, root)
    frame = _read(path, ("item_id", "position", "click", "propensity_score"))
    out = pd.DataFrame(
        dict(
            item=frame["item_id"].to_numpy(np.int64),
            position=frame["position"].to_numpy(np.int64) - 1,
            click=frame["click"].to_numpy(np.int64),
            propensity=frame["propensity_score"].to_numpy(np.float64),
        )
    )
    if out["position"].min() < 0 or not out["click"].isin([0, 1]).all():
        raise ValueError(f"data file {path}: positions must start at 1 and clicks be 0/1")
    return out


def sequences(interactions: pd.DataFrame) -> list[np.ndarray]:
    """Each user's items in time order (ties keep the file's order): a list of U int64 arrays,
    user u at index u (interactions with dense user ids 0..U-1, as `load_movielens` gives)."""
    frame = interactions.reset_index(drop=True)
    order = np.lexsort((np.arange(len(frame)), frame["timestamp"].to_numpy(), frame["user"].to_numpy()))
    users = frame["user"].to_numpy()[order]
    items = frame["item"].to_numpy()[order]
    n_users = int(users.max()) + 1 if users.size else 0
    bounds = np.searchsorted(users, np.arange(n_users + 1))
    return [items[bounds[u] : bounds[u + 1]] for u in range(n_users)]


@dataclass(frozen=True)
class LeaveOneOut:
    """Leave-one-out split of U users' sequences: each user's last item is the test target, the one
    before it the validation target, the rest training. Users with fewer than 3 items are left out.

    users [U'] the users kept; train: list of U' arrays (all but the last two items);
    valid_target, test_target [U'] item ids.
    The validation input is train[u]; the test input is train[u] + valid_target[u].
    """

    users: np.ndarray
    train: list[np.ndarray]
    valid_target: np.ndarray
    test_target: np.ndarray

    def test_input(self, u: int) -> np.ndarray:
        return np.append(self.train[u], self.valid_target[u])


def leave_one_out(seqs: list[np.ndarray]) -> LeaveOneOut:
    """Split time-ordered sequences (`sequences`) by leaving the last item out for testing and the
    one before it for validation."""
    keep = [u for u, s in enumerate(seqs) if len(s) >= 3]
    if not keep:
        raise ValueError("leave-one-out needs users with at least 3 interactions; none has")
    return LeaveOneOut(
        users=np.array(keep, np.int64),
        train=[seqs[u][:-2] for u in keep],
        valid_target=np.array([seqs[u][-2] for u in keep], np.int64),
        test_target=np.array([seqs[u][-1] for u in keep], np.int64),
    )
