"""Training examples for the supervised sequence models, from logs and from serving, and the replay of
served steps a refit reads.

An example is an impression: a user's padded history and context when an item was shown at a slate
position, whether it was clicked and the minutes watched. `step_examples` builds them from logs
(agents.logs, one row per impression) exactly as the env builds observations; `served_examples` from a
step a recommender served. Histories are stored once per user-step (`Examples`), the served steps wait
in a ring buffer (`ReplayBuffer`), and a refit reads logs and buffer in place as one `ExampleChain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from agents.logs import validate_logs
from envs.core import (
    CONTEXT_FEATURES,
    HISTORY_FEATURES,
    LIFETIME_CONTEXT_FEATURES,
    LIFETIME_HISTORY_FEATURES,
    WATCH_TIME_CAP,
    days_ago,
    dedupe_slates,
)

HISTORY_KEYS = ("history_items", "history_features", "history_mask", "context")  # stored per user-step
ROW_KEYS = ("target_item", "target_position", "click", "watch_time")  # stored per impression


@dataclass
class Examples:
    """Training examples with the histories stored once per user-step.

    Step level (S user-steps): history_items [S, H] int32, history_features [S, H, 5]
    float32, history_mask [S, H] float32, context [S, 3] float32.
    Row level (M impressions): step_index [M] (row -> its user-step), target_item [M],
    target_position [M] (slate position, 0 = top), click [M] float32 (0/1),
    watch_time [M] float32 (minutes; 0 without a click); day [S] float64 (when each step was
    served; served rows of a recommender refitting in days, else None); opens [S] bool (the
    user-step is its trajectory's first: a (seed, user)'s first logged step; examples from logs,
    else None).
    A slate of K items is K rows sharing one history, so this is K times smaller than
    the per-row arrays of :func:`examples_from_logs`.
    """

    history_items: np.ndarray
    history_features: np.ndarray
    history_mask: np.ndarray
    context: np.ndarray
    step_index: np.ndarray
    target_item: np.ndarray
    target_position: np.ndarray
    click: np.ndarray
    watch_time: np.ndarray
    day: np.ndarray | None = None
    opens: np.ndarray | None = None

    @property
    def n_steps(self) -> int:
        return len(self.history_items)

    def __len__(self) -> int:
        return len(self.target_item)

    def expand(self) -> dict[str, np.ndarray]:
        """Per-row arrays: every history/context key indexed by step_index ([M, ...])."""
        return self.rows(slice(None))

    def rows(self, rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """The per-row arrays of `rows` (history/context keys through step_index; [B, ...])."""
        out = {k: getattr(self, k)[self.step_index[rows]] for k in HISTORY_KEYS}
        out.update({k: getattr(self, k)[rows] for k in ROW_KEYS})
        return out

    def tail(self, n_steps: int) -> Examples:
        """The newest `n_steps` user-steps and their rows (steps are stored oldest first)."""
        cut = max(self.n_steps - n_steps, 0)
        if cut == 0:
            return self
        keep = np.zeros(self.n_steps, dtype=bool)
        keep[cut:] = True
        return self.steps_where(keep)

    def steps_where(self, keep: np.ndarray) -> Examples:
        """The user-steps where `keep` [S] bool holds, and their rows, in their order."""
        new_index = np.cumsum(keep) - 1  # old step -> new step
        rows = keep[self.step_index]
        fields = {k: getattr(self, k)[keep] for k in HISTORY_KEYS}
        fields.update({k: getattr(self, k)[rows] for k in ROW_KEYS})
        day = None if self.day is None else self.day[keep]
        return Examples(**fields, step_index=new_index[self.step_index[rows]], day=day)


class ExampleChain:
    """Examples (`Examples`, `ReplayBuffer`) read as their concatenation without copying them: row
    r of the chain is row r - offset of the segment holding it. A refit draws a few minibatches from
    the logs and the replay buffer (up to replay_capacity user-steps, about 3.6 KB each at history
    128, about 195 MB when full); concatenating them for that copied the buffer three times per refit."""

    def __init__(self, segments: list[Examples | ReplayBuffer]) -> None:
        self.segments = [segment for segment in segments if len(segment)]
        self.offsets = np.cumsum([0] + [len(segment) for segment in self.segments])  # [P + 1] first rows

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_steps(self) -> int:
        return sum(segment.n_steps for segment in self.segments)

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The per-row arrays of the chain's `rows` [B], in their order (as `Examples.rows`)."""
        rows = np.asarray(rows, dtype=np.int64)
        which = np.searchsorted(self.offsets, rows, side="right") - 1  # [B] segment of each row
        parts = [np.flatnonzero(which == p) for p in range(len(self.segments))]
        out = {}
        for p, at in enumerate(parts):
            if not at.size:
                continue
            got = self.segments[p].rows(rows[at] - self.offsets[p])
            for key, value in got.items():
                if key not in out:
                    out[key] = np.empty((len(rows),) + value.shape[1:], dtype=value.dtype)
                out[key][at] = value
        return out


class ReplayBuffer:
    """The newest `capacity` served user-steps, K impressions each (a slate), oldest first, in arrays
    allocated once and written as a ring: buffering a step copies only that step, and a refit reads
    rows in place. Row r is slot r % K of the (r // K)-th oldest step. Fields as `Examples`
    (histories per step; target_item, target_position, click, watch_time per step and slot [cap, K];
    day per step, NaN where the rows were not dated)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.start, self.n_steps, self.k = 0, 0, 0  # oldest step's slot, steps held, rows per step
        self.arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.n_steps * self.k

    def push(self, examples: Examples) -> None:
        """Append served user-steps (K rows each, in step order, as `served_examples` builds them),
        overwriting the oldest past capacity."""
        n = examples.n_steps
        if not n:
            return
        k = len(examples) // n
        if not self.arrays:
            self.k = k
            fields = {key: getattr(examples, key) for key in HISTORY_KEYS}
            fields.update({key: getattr(examples, key).reshape(n, k) for key in ROW_KEYS})
            # np.empty: pages are touched only as steps arrive, so a large capacity costs what is used
            self.arrays = {key: np.empty((self.capacity,) + v.shape[1:], v.dtype) for key, v in fields.items()}
            self.arrays["day"] = np.empty(self.capacity, np.float64)
        assert k == self.k and (examples.step_index == np.repeat(np.arange(n), k)).all(), "K rows per step, in order"
        if n > self.capacity:
            examples, n = examples.tail(self.capacity), self.capacity
        at = (self.start + self.n_steps + np.arange(n)) % self.capacity
        for key in HISTORY_KEYS:
            self.arrays[key][at] = getattr(examples, key)
        for key in ROW_KEYS:
            self.arrays[key][at] = getattr(examples, key).reshape(n, k)
        self.arrays["day"][at] = np.nan if examples.day is None else examples.day
        overflow = max(self.n_steps + n - self.capacity, 0)
        self.start = (self.start + overflow) % self.capacity
        self.n_steps = min(self.n_steps + n, self.capacity)

    def max_day(self) -> float:
        """The latest day among the steps held (NaN when empty or undated)."""
        if not self.n_steps:
            return float("nan")
        return float(self.arrays["day"][(self.start + np.arange(self.n_steps)) % self.capacity].max())

    def rows(self, rows: np.ndarray | slice) -> dict[str, np.ndarray]:
        """The per-row arrays of `rows` (as `Examples.rows`)."""
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        steps, slot = (self.start + rows // self.k) % self.capacity, rows % self.k
        out = {key: self.arrays[key][steps] for key in HISTORY_KEYS}
        out.update({key: self.arrays[key][steps, slot] for key in ROW_KEYS})
        return out


def step_examples(logs: pd.DataFrame, history_len: int, length_mean: float, lifetime: bool = False) -> Examples:
    """The examples of :func:`examples_from_logs` with the histories stored once per user-step
    (`Examples`: row m of the logs is `step_index[m]`'s user-step; rows stay in the logs' order).
    Offline evaluation rebuilds the logged observations from it (agents/offline.py)."""
    if history_len < 1:
        raise ValueError(f"history_len must be >= 1, got {history_len}")
    if not length_mean > 0:
        raise ValueError(f"length_mean must be > 0, got {length_mean}")
    col = lambda name, dtype: logs[name].to_numpy(dtype=dtype)  # noqa: E731
    seed, user, step = col("seed", np.int64), col("user", np.int64), col("step", np.int64)
    item, position, click = col("item", np.int64), col("position", np.int64), col("click", np.float32)
    # float32 as the env computes: the history then matches its observations bit for bit.
    watch, completion = col("watch_time", np.float32), col("completion", np.float32)
    context_names = LIFETIME_CONTEXT_FEATURES if lifetime else CONTEXT_FEATURES
    time = np.stack([col(name, np.float32) for name in context_names], axis=1)
    n_features = len(LIFETIME_HISTORY_FEATURES if lifetime else HISTORY_FEATURES)

    # Sort rows by (seed, user, step, position); a user-step starts where (seed, user, step) changes.
    order = np.lexsort((position, step, user, seed))
    key = np.stack([seed[order], user[order], step[order]], axis=1)
    new_step = np.ones(len(order), dtype=bool)
    new_step[1:] = (key[1:] != key[:-1]).any(axis=1)
    start = np.flatnonzero(new_step)  # [S] first (top-position) row of each step
    step_of_sorted = np.cumsum(new_step) - 1  # [M] in sorted order
    n_steps = len(start)

    # One history entry per user-step: the clicked item if any, else the top-position item.
    hit = order[click[order] > 0]  # clicked rows (at most one per step)
    hit_step = step_of_sorted[click[order] > 0]
    entry_item = item[order[start]].copy()
    entry_item[hit_step] = item[hit]
    entry = np.zeros((n_steps, n_features), np.float32)
    entry[hit_step, 0] = 1.0
    entry[hit_step, 1] = completion[hit]
    entry[hit_step, 2] = np.minimum(watch[hit] / np.float32(length_mean), np.float32(WATCH_TIME_CAP))
    entry[:, 3:5] = time[order[start], :2]
    if lifetime:  # when each step was served (days ago is set per example below) and whether it opened a session
        day = col("day", np.float64)[order[start]].astype(np.float32)
        entry[:, 6] = col("session_start", np.float32)[order[start]]

    # Rank of each step within its user's sequence; step s sees entries s-H .. s-1 (newest last).
    step_user = key[start, :2]
    first_of_user = np.ones(n_steps, dtype=bool)
    first_of_user[1:] = (step_user[1:] != step_user[:-1]).any(axis=1)
    rank = np.arange(n_steps) - np.maximum.accumulate(np.where(first_of_user, np.arange(n_steps), 0))
    h = history_len
    history_items = np.zeros((n_steps, h), np.int32)
    history_features = np.zeros((n_steps, h, n_features), np.float32)
    history_mask = np.zeros((n_steps, h), np.float32)
    for back in range(1, h + 1):  # offset 1 = the newest entry, last slot
        dst = np.flatnonzero(rank >= back)
        history_items[dst, h - back] = entry_item[dst - back]
        history_features[dst, h - back] = entry[dst - back]
        history_mask[dst, h - back] = 1.0
        if lifetime:  # as the env computes it when it shows step dst: days from that entry to now
            history_features[dst, h - back, 5] = days_ago(day[dst], day[dst - back])

    step_index = np.empty(len(order), np.int64)
    step_index[order] = step_of_sorted  # back to the logs' row order
    return Examples(
        history_items=history_items,
        history_features=history_features,
        history_mask=history_mask,
        context=time[order[start]],
        step_index=step_index,
        target_item=item,
        target_position=position,
        click=click,
        watch_time=np.where(click > 0, watch, np.float32(0.0)).astype(np.float32),
        opens=first_of_user,
    )


def fit_examples(
    logs: pd.DataFrame, n_items: int, n_positions: int, history_len: int, length_mean: float, lifetime: bool = False
) -> Examples:
    """The examples a sequence model is fitted on: `logs` checked (agents.logs.validate_logs: empty logs,
    missing columns or ids outside the catalog of `n_items` are a ValueError; so are slate positions
    outside 0..n_positions-1), as :func:`step_examples`."""
    logs = validate_logs(logs, n_items, lifetime=lifetime)
    if logs["position"].max() >= n_positions or logs["position"].min() < 0:
        raise ValueError(
            f"logs hold slate positions outside 0..{n_positions - 1} (the observation has {n_positions} candidates)"
        )
    return step_examples(logs, history_len, length_mean, lifetime)


def examples_from_logs(
    logs: pd.DataFrame, history_len: int, length_mean: float, lifetime: bool = False
) -> dict[str, np.ndarray]:
    """Turn impression logs (``agents.logs.LOG_COLUMNS``) into per-impression training examples.

    Example ``m`` is log row ``m``. Its history is the user's previous ``history_len``
    user-steps (earlier steps of the same ``(seed, user)``), exactly as the env builds
    observations: one entry per step, the clicked item if the step had a click, else
    the top-position item; features (clicked, completion, min(watch_time / length_mean,
    WATCH_TIME_CAP), season_sin, season_cos) of that step; right-aligned, newest last,
    zero-padded with mask 0. ``length_mean`` is the catalog's ``length_mean``.

    Returns (M rows, H = history_len):
      history_items [M, H] int32, history_features [M, H, 5] float32, history_mask [M, H]
      float32, context [M, 3] float32 (season_sin, season_cos, progress of the row's step),
      target_item [M] int64, target_position [M] int64, click [M] float32,
      watch_time [M] float32 (minutes).
    Steps missing from the logs are skipped, not padded: the history is the user's
    previous *logged* steps (logs from ``collect_logs`` have no gaps). With ``lifetime`` (logs
    of a lifetime scenario, with LIFETIME_LOG_COLUMNS) the history features add days ago and
    session start, and the context the lifetime columns [M, 7], as the lifetime env shows them.
    """
    return step_examples(logs, history_len, length_mean, lifetime).expand()


def served_examples(
    obs: Mapping[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, position: np.ndarray, rows: np.ndarray
) -> Examples:
    """The impressions a recommender served at one step, as examples: for each user of `rows` [n] (indices
    into the batch), the K items of its slate (actions as act() returned them, deduplicated as the env
    does), each at its slot, clicked where `position` [N] (the clicked slot, -1: none) says, with that
    user's reward [N] as the watch time; the history and context are the observation's."""
    candidates = np.asarray(obs["candidate_items"])
    n, c = candidates.shape
    slates = dedupe_slates(np.asarray(actions).reshape(n, -1).astype(np.int64), c)[rows]  # as the env does
    items = np.take_along_axis(candidates[rows], slates, axis=1).astype(np.int64)  # [n, K]
    k = items.shape[1]
    hit = np.arange(k)[None, :] == position[rows][:, None]  # the clicked slot
    reward = np.asarray(rewards, dtype=np.float32)[rows]
    history = {key: np.asarray(obs[key])[rows].astype(np.float32) for key in HISTORY_KEYS}
    history["history_items"] = np.asarray(obs["history_items"])[rows].round().astype(np.int32)
    return Examples(
        **history,
        step_index=np.repeat(np.arange(len(rows)), k),
        target_item=items.ravel(),
        target_position=np.tile(np.arange(k), len(rows)),
        click=hit.ravel().astype(np.float32),
        watch_time=np.where(hit, reward[:, None], np.float32(0.0)).ravel().astype(np.float32),
    )
