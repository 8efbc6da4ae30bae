"""Supervised recommender baselines trained on logged interactions.

Two sequence models predict the engagement of showing an item to a user from
the user's padded interaction history (the same observation the RL agents get):

- ``sasrec``:  the project's Transformer :class:`~agents.encoder.RecommenderEncoder`
  (a SASRec-style next-engagement model);
- ``gru4rec``: the same token embeddings (``HistoryEncoder.embed``), but a GRU
  instead of the Transformer blocks.

Both have two heads over (state, candidate) pairs: a click logit, trained with
binary cross-entropy, and the watch time given a click (softplus, in units of
the catalog's mean item length), trained by squared error on clicked rows.
Serving is myopic and greedy: candidates are ranked by the expected engagement
``p(click | top slot) * E[watch | click]`` (top-K for slates).

Training data come from logs (``agents.logs``, one row per impression) turned
into examples by :func:`examples_from_logs`. With ``retrain_every = k > 0`` the
recommender also learns from what it serves, as deployed recommenders do:
``observe()`` (called by the evaluation harness after every step) buffers the
served impressions and every k steps fine-tunes on logs + fresh data (see ``refit_batches``).

Deployed on a calendar (lifetime scenarios). With ``train_days = T`` (default: half the horizon,
30 days on the `lifetime` preset) the model is trained on the logging policy's logs of days [0, T)
(``collect_logs`` with ``until_day``) and serves from day T: it carries the logging policy as its
``warmup`` and ``serves_from_day = T``, so the evaluation harness serves each user with the logging
policy until their own clock reaches T, then with the model (the harness measures whole lives, and
the minutes from T on as ``return_served_mean``). With ``retrain_every_days = D`` new model
versions are fitted for the refit days c = T + D, T + 2D, ...

Versioned refits, and why they are causal. In the batched env users' clocks diverge: in one step a
heavy user in a long session may be on day 31 while a light one, back from a gap, is on day 50. A
user on day d may only be served a model trained on rows dated before some cutoff c <= d. The
deployment keeps model versions, each labelled with its cutoff: version 0 is the fit on the logs
of [0, T) (cutoff T); the version for refit day c is fitted at the first step after which the
*fastest* user still in the deployment has reached c, by fine-tuning the newest version on every
row that exists at that moment: the logs of [0, T) plus the rows the deployment's own serving
produced (every version's, the older ones included: they are its serving; the warm-up's are not:
they are the logging policy's, which the logs of [0, T) already stand for). Every such row is
dated before c: it was served at a step where its user's clock, checked after the step before,
was below c, or that refit would have run then (asserted at every fit). Each user is then served,
step by step, by the newest kept version whose cutoff is <= their own clock
(:func:`serving_versions`; one batched forward pass per version among the step's users), so no
user is ever served a version trained on rows from their own future, and a user on day d is
served the version of the last refit day <= d, fitted by then since that user had reached the day
too: the serving lag (day - cutoff) is in [0, D), about D / 2. The price of not waiting for the
slowest user: rows of slower users dated before c that arrive after the version for c was fitted
go into later versions only (``past_cutoff`` in a version's record: the share of live users past
its day when it was fitted).
Memory: a version older than the newest one every live user has reached can serve no one again
(clocks only move forward) and is dropped, so the versions kept span the live users' clocks (on
`lifetime` at D = 1: at most 30, the days from T = 30 to the horizon, of 0.85 MB each for sasrec).
The served rows wait in a ring buffer of replay_capacity user-steps (`_ReplayBuffer`) and a refit
reads them in place with the logs (`_Chain`).
``serving_stats()`` reports the refits, their fit seconds, the serving lag (mean over served steps
of day - the serving version's cutoff) and the most versions kept at once; ``versions`` holds one
record per version (VERSION_RECORD). Each evaluation (``bind``) is a fresh deployment: it starts again from
version 0 with no served rows (a previous evaluation's rows would be from the new users' future).
A user leaves the deployment at the step their life ends (the harness's info["done"]; their clock
then is a next visit that will not come), and so does a slot the harness restarts with a new user:
neither moves its calendar nor enters the training data again.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from agents.encoder import EncoderConfig, HistoryEncoder, RecommenderEncoder
from agents.logs import EpsilonPopularity, LogParams, validate_logs
from agents.model import encoder_config, serve
from agents.policy import slate_from_scores
from envs.core import (
    CONTEXT_FEATURES,
    HISTORY_FEATURES,
    LIFETIME_CONTEXT_FEATURES,
    LIFETIME_HISTORY_FEATURES,
    WATCH_TIME_CAP,
    days_ago,
    dedupe_slates,
)
from simulator.params import check_int, check_range

__all__ = [
    "KINDS",
    "SupervisedParams",
    "examples_from_logs",
    "step_examples",
    "GRUHistoryEncoder",
    "EngagementModel",
    "SupervisedRecommender",
    "VERSION_RECORD",
    "serving_versions",
]

KINDS = ("sasrec", "gru4rec")
MAX_DAYS = 3650.0
_HISTORY_KEYS = ("history_items", "history_features", "history_mask", "context")
_ROW_KEYS = ("target_item", "target_position", "click", "watch_time")
# One record per model version of a calendar deployment (all floats; NaN where it has no value):
# its number (0: the fit on the logs), cutoff day (trained on rows dated before it), the fastest and
# slowest live users' days when it was fitted and the share of live users then past its cutoff (the
# others' rows dated before it were still to come), the logged and served user-steps (and served rows)
# it was trained on, the latest day among the served ones, its fit seconds, the evaluation step it
# was fitted at, and the served user-steps it served.
VERSION_RECORD = (
    "version",
    "cutoff",
    "fastest_day",
    "slowest_day",
    "past_cutoff",
    "logged_steps",
    "fresh_steps",
    "fresh_rows",
    "fresh_max_day",
    "fit_seconds",
    "at_step",
    "served_steps",
)


@dataclass(frozen=True)
class SupervisedParams(LogParams):
    """Training of a supervised recommender (the run config's `algo:` section), on top of the
    logged data it learns from (LogParams)."""

    epochs: int = 3
    batch_size: int = 512
    lr: float = 1e-3
    retrain_every: int = 0  # refit on logs + fresh interactions every k served steps (0: never)
    refit_batches: int = 32  # minibatches per refit, half fresh and half logged (0: a whole epoch)
    replay_capacity: int = 50_000  # most recent served user-steps kept for refitting
    # Lifetime scenarios only (days mean nothing in a session scenario: set there, an error):
    retrain_every_days: float = 0.0  # refit on days T + D, T + 2D, ... (0: never)
    train_days: float | None = None  # T: trained on logs of days [0, T), served from day T (None: half
    # the horizon, 30 days on `lifetime`; 0: trained on `log_steps` steps of logs of whole lives, served from day 0)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_int("algo", "epochs", self.epochs, 1)
        check_int("algo", "batch_size", self.batch_size, 1)
        check_range("algo", "lr", self.lr, 0.0, 1.0, lo_open=True)
        check_int("algo", "retrain_every", self.retrain_every, 0)
        check_int("algo", "refit_batches", self.refit_batches, 0)
        check_int("algo", "replay_capacity", self.replay_capacity, 1)
        check_range("algo", "retrain_every_days", self.retrain_every_days, 0.0, MAX_DAYS)
        if self.train_days is not None:
            check_range("algo", "train_days", self.train_days, 0.0, MAX_DAYS)
        if self.retrain_every and self.retrain_every_days:
            raise ValueError(
                "algo.retrain_every (served steps) and algo.retrain_every_days (days) are two cadences: set one"
            )

    @property
    def name_suffix(self) -> str:
        """What the refitting variant adds to the agent's name: -retrain (every k steps), -retrain-7d (days)."""
        if self.retrain_every:
            return "-retrain"
        return f"-retrain-{self.retrain_every_days:g}d" if self.retrain_every_days else ""

    def deployment_day(self, horizon_days: float | None) -> float:
        """T, the day the model starts serving: train_days (half of `horizon_days` when None) on a
        lifetime scenario of that horizon, 0 in session scenarios (`horizon_days` None)."""
        if horizon_days is None:
            return 0.0
        return 0.5 * float(horizon_days) if self.train_days is None else float(self.train_days)

    def check_scenario(self, scenario: Any) -> None:
        """ValueError, in one line, for settings the scenario cannot take: a cadence in days or a
        train_days in a session scenario (no calendar), a train_days at or past the horizon."""
        life = scenario.world.lifetime
        if not life.enabled:
            for name in ("retrain_every_days", "train_days"):
                if getattr(self, name):
                    raise ValueError(
                        f"algo.{name} is for lifetime scenarios: {scenario.name!r} has no calendar "
                        "(days mean nothing there; refit every k served steps with algo.retrain_every)"
                    )
            return
        day = self.deployment_day(life.horizon_days)
        if day >= life.horizon_days:
            raise ValueError(
                f"algo.train_days must be in [0, {life.horizon_days:g}) (lifetime.horizon_days), got {day:g}"
            )


# --------------------------------------------------------------------------- examples


@dataclass
class _Examples:
    """Training examples with the histories stored once per user-step.

    Step level (S user-steps): history_items [S, H] int32, history_features [S, H, 5]
    float32, history_mask [S, H] float32, context [S, 3] float32.
    Row level (M impressions): step_index [M] (row -> its user-step), target_item [M],
    target_position [M] (slate position, 0 = top), click [M] float32 (0/1),
    watch_time [M] float32 (minutes; 0 without a click); day [S] float64 (when each step was
    served; served rows of a recommender refitting in days, else None).
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
        out = {k: getattr(self, k)[self.step_index[rows]] for k in _HISTORY_KEYS}
        out.update({k: getattr(self, k)[rows] for k in _ROW_KEYS})
        return out

    def tail(self, n_steps: int) -> _Examples:
        """The newest `n_steps` user-steps and their rows (steps are stored oldest first)."""
        cut = max(self.n_steps - n_steps, 0)
        if cut == 0:
            return self
        keep = np.zeros(self.n_steps, dtype=bool)
        keep[cut:] = True
        return self.steps_where(keep)

    def steps_where(self, keep: np.ndarray) -> _Examples:
        """The user-steps where `keep` [S] bool holds, and their rows, in their order."""
        new_index = np.cumsum(keep) - 1  # old step -> new step
        rows = keep[self.step_index]
        fields = {k: getattr(self, k)[keep] for k in _HISTORY_KEYS}
        fields.update({k: getattr(self, k)[rows] for k in _ROW_KEYS})
        day = None if self.day is None else self.day[keep]
        return _Examples(**fields, step_index=new_index[self.step_index[rows]], day=day)


class _Chain:
    """Examples (`_Examples`, `_ReplayBuffer`) read as their concatenation without copying them: row
    r of the chain is row r - offset of the segment holding it. A refit draws a few minibatches from
    the logs and the replay buffer (up to replay_capacity user-steps, about 3.6 KB each at history
    128, about 195 MB when full); concatenating them for that copied the buffer three times per refit."""

    def __init__(self, segments: list[_Examples | _ReplayBuffer]) -> None:
        self.segments = [segment for segment in segments if len(segment)]
        self.offsets = np.cumsum([0] + [len(segment) for segment in self.segments])  # [P + 1] first rows

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def n_steps(self) -> int:
        return sum(segment.n_steps for segment in self.segments)

    def rows(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        """The per-row arrays of the chain's `rows` [B], in their order (as `_Examples.rows`)."""
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


class _ReplayBuffer:
    """The newest `capacity` served user-steps, K impressions each (a slate), oldest first, in arrays
    allocated once and written as a ring: buffering a step copies only that step, and a refit reads
    rows in place. Row r is slot r % K of the (r // K)-th oldest step. Fields as `_Examples`
    (histories per step; target_item, target_position, click, watch_time per step and slot [cap, K];
    day per step, NaN where the rows were not dated)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.start, self.n_steps, self.k = 0, 0, 0  # oldest step's slot, steps held, rows per step
        self.arrays: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return self.n_steps * self.k

    def push(self, examples: _Examples) -> None:
        """Append served user-steps (K rows each, in step order, as `_served_examples` builds them),
        overwriting the oldest past capacity."""
        n = examples.n_steps
        if not n:
            return
        k = len(examples) // n
        if not self.arrays:
            self.k = k
            fields = {key: getattr(examples, key) for key in _HISTORY_KEYS}
            fields.update({key: getattr(examples, key).reshape(n, k) for key in _ROW_KEYS})
            # np.empty: pages are touched only as steps arrive, so a large capacity costs what is used
            self.arrays = {key: np.empty((self.capacity,) + v.shape[1:], v.dtype) for key, v in fields.items()}
            self.arrays["day"] = np.empty(self.capacity, np.float64)
        assert k == self.k and (examples.step_index == np.repeat(np.arange(n), k)).all(), "K rows per step, in order"
        if n > self.capacity:
            examples, n = examples.tail(self.capacity), self.capacity
        at = (self.start + self.n_steps + np.arange(n)) % self.capacity
        for key in _HISTORY_KEYS:
            self.arrays[key][at] = getattr(examples, key)
        for key in _ROW_KEYS:
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
        """The per-row arrays of `rows` (as `_Examples.rows`)."""
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64)
        steps, slot = (self.start + rows // self.k) % self.capacity, rows % self.k
        out = {key: self.arrays[key][steps] for key in _HISTORY_KEYS}
        out.update({key: self.arrays[key][steps, slot] for key in _ROW_KEYS})
        return out


def step_examples(logs: pd.DataFrame, history_len: int, length_mean: float, lifetime: bool = False) -> _Examples:
    """The examples of :func:`examples_from_logs` with the histories stored once per user-step
    (`_Examples`: row m of the logs is `step_index[m]`'s user-step; rows stay in the logs' order).
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
    return _Examples(
        history_items=history_items,
        history_features=history_features,
        history_mask=history_mask,
        context=time[order[start]],
        step_index=step_index,
        target_item=item,
        target_position=position,
        click=click,
        watch_time=np.where(click > 0, watch, np.float32(0.0)).astype(np.float32),
    )


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


# --------------------------------------------------------------------------- models


class GRUHistoryEncoder(HistoryEncoder):
    """GRU4Rec-style history encoder: the tokens of ``HistoryEncoder.embed`` fed to a GRU.

    Token t = item-id embedding + proj(item features) + proj(responses) + position, as
    for the Transformer; the CLS token (+ proj(context)) is the initial hidden state.
    One GRU cell replaces the Transformer blocks (``n_layers``/``n_heads`` are unused);
    padded steps leave the hidden state unchanged, so an empty history gives the
    CLS/context state. forward(obs) -> state [B, d_model].
    """

    def __init__(
        self,
        config: EncoderConfig,
        item_embedding: nn.Embedding | None = None,
        item_features: Tensor | np.ndarray | None = None,
    ) -> None:
        super().__init__(config, item_embedding=item_embedding, item_features=item_features)
        self.stack = nn.GRUCell(config.d_model, config.d_model)

    def encode_tokens(self, tokens: Tensor, key_mask: Tensor) -> Tensor:
        """tokens [B, 1 + H, d] (CLS first), key_mask bool [B, 1 + H] -> state [B, d]."""
        state = tokens[:, 0]
        for t in range(1, tokens.shape[1]):
            state = torch.where(key_mask[:, t, None], self.stack(tokens[:, t], state), state)
        return self.final_norm(state)


class EngagementModel(nn.Module):
    """History encoder + item tower with a click head and a watch-time head.

    forward(obs, positions) -> (click_logit [B, C], watch [B, C]): the click logit of
    showing candidate c at slate position ``positions[b, c]`` (all top-slot when None),
    and E[watch time | click] > 0 in units of the catalog's mean item length.
    """

    def __init__(self, kind: str, config: EncoderConfig, item_features: np.ndarray | None, n_positions: int) -> None:
        super().__init__()
        self.encoder = RecommenderEncoder(config, item_features=item_features)
        if kind == "gru4rec":
            self.encoder.history = GRUHistoryEncoder(config, self.encoder.item_tower.item_embedding, item_features)
        d = config.d_model
        self.click_bias = nn.Parameter(torch.zeros(()))
        self.position_bias = nn.Parameter(torch.zeros(n_positions))  # position bias of the logged slates
        self.watch_query = nn.Linear(d, d)
        self.watch_bias = nn.Parameter(torch.zeros(()))  # softplus(0) = 0.69 mean lengths: a fair start

    def forward(self, obs: Mapping[str, Tensor], positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        out = self.encoder(obs)
        bias = self.position_bias[0] if positions is None else self.position_bias[positions]
        click_logit = out.logits + self.click_bias + bias
        watch = F.softplus(RecommenderEncoder.score(self.watch_query(out.user), out.candidates) + self.watch_bias)
        return click_logit, watch


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device):
    """Run a block with torch's RNG seeded, leaving the caller's RNG state as it was."""
    devices = []
    if device.type == "cuda":
        devices = [torch.cuda.current_device() if device.index is None else device.index]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class _Version:
    """A model version of a calendar deployment: its number, its cutoff day, its serving weights."""

    index: int
    cutoff: float
    net: EngagementModel


def serving_versions(cutoffs: np.ndarray, days: np.ndarray) -> np.ndarray:
    """[N] int: for each day of `days` [N], the newest of the model versions of `cutoffs` [V]
    (increasing) whose cutoff is <= that day, as an index into `cutoffs`; -1 before the first."""
    return np.searchsorted(np.asarray(cutoffs, dtype=np.float64), np.asarray(days, dtype=np.float64), side="right") - 1


class SupervisedRecommender:
    """A supervised sequence recommender behind the Policy protocol (greedy by expected engagement).

    kind:              "sasrec" (Transformer encoder) or "gru4rec" (GRU over the same tokens).
    observation_space: the env's single observation space (gymnasium Dict).
    item_features:     the catalog feature table [n_items, F_item] (``env.core.item_features``).
    n_items:           catalog size (item ids are 0..n_items-1).
    params:            training and refitting settings (SupervisedParams: epochs, batch_size, lr,
                       retrain_every = k > 0 refits every k observed steps on logs + fresh served
                       data, refit_batches, replay_capacity), validated once by the dataclass.
    model:             EncoderConfig overrides (d_model, n_layers, ...) on top of DEFAULT_MODEL.
    seed:              seeds the initial weights, the shuffling and dropout: same seed and data,
                       same scores.
    length_mean:       the catalog's ``length_mean`` (history watch times are in its units);
                       ``bind(env)`` checks it. ``from_env`` fills it and the sizes in.
    horizon_days:      lifetime scenarios: ``lifetime.horizon_days`` (the default day T of
                       ``train_days`` is half of it); required there, checked by ``bind(env)``;
                       filled in by ``from_env`` and ``for_scenario``.

    ``name`` is the kind, with "-retrain" when retrain_every > 0 ("-retrain-7d" for a cadence in
    days). ``losses`` holds the per-epoch mean losses of the last ``fit``; ``refit_losses`` one loss
    per refit. On lifetime scenarios, ``serves_from_day`` (T) and ``warmup`` (the logging policy,
    seeded with `seed`; None when T = 0) tell the harness when the model takes over, and the
    deployment serves model versions (module docstring): ``versions`` holds one record per version
    fitted in the current evaluation (VERSION_RECORD keys: version 0 is the fit on the logs),
    ``refits`` the refit versions' records (``versions[1:]``).
    """

    def __init__(
        self,
        kind: str,
        observation_space: Any,
        item_features: np.ndarray | None,
        n_items: int,
        params: SupervisedParams = SupervisedParams(),
        model: Mapping[str, Any] | None = None,
        seed: int = 0,
        device: str = "cpu",
        length_mean: float = 4.0,
        horizon_days: float | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ValueError(f"SupervisedRecommender.kind must be one of {KINDS}, got {kind!r}")
        if not isinstance(params, SupervisedParams):
            raise ValueError(f"SupervisedRecommender.params must be SupervisedParams, got {type(params).__name__}")
        if model is not None and not isinstance(model, Mapping):
            raise ValueError(f"SupervisedRecommender.model must be a dict or None, got {type(model).__name__}")
        check_int("supervised", "n_items", n_items, 1)
        check_int("supervised", "seed", seed, 0)
        check_range("supervised", "length_mean", length_mean, 0.0, lo_open=True)
        self.kind, self.params = kind, params
        self.n_items, self.seed, self.length_mean = int(n_items), int(seed), float(length_mean)
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"SupervisedRecommender.device is not a torch device: {device!r}") from err
        self.config = encoder_config(observation_space, self.n_items, model)
        # A lifetime scenario's observations: histories with days ago and session starts.
        self.lifetime = self.config.history_feature_dim == len(LIFETIME_HISTORY_FEATURES)
        self.n_positions = int(observation_space["candidate_items"].shape[-1])
        if item_features is not None:
            item_features = np.asarray(item_features, dtype=np.float32)
            expected = (self.n_items, self.config.item_feature_dim)
            if item_features.shape != expected:
                raise ValueError(
                    f"SupervisedRecommender.item_features must have shape {expected} "
                    f"(n_items, F_item), got {item_features.shape}"
                )
        elif self.config.item_feature_dim:
            raise ValueError(
                "SupervisedRecommender.item_features is required: the observations carry "
                "history ids only (pass env.core.item_features)"
            )
        self.item_features = item_features
        self.name = kind + params.name_suffix
        self.slate_size = 1
        if params.retrain_every_days and not self.lifetime:
            raise ValueError("algo.retrain_every_days is for lifetime scenarios: this env has no calendar")
        if self.lifetime and horizon_days is None:
            raise ValueError(
                "SupervisedRecommender.horizon_days is required on a lifetime scenario (use from_env or for_scenario)"
            )
        if self.lifetime:
            check_range("supervised", "horizon_days", horizon_days, 0.0, MAX_DAYS, lo_open=True)
        self.horizon_days = float(horizon_days) if self.lifetime else None
        self.serves_from_day = params.deployment_day(self.horizon_days)
        self._dated = self.lifetime and (self.serves_from_day > 0 or params.retrain_every_days > 0)
        self._build()
        self._start_serving()

    @classmethod
    def from_env(
        cls, kind: str, env: Any, params: SupervisedParams = SupervisedParams(), **kwargs: Any
    ) -> SupervisedRecommender:
        """Sizes, item features and length_mean read from a RecVectorEnv or RecEnv; `kwargs`: model,
        seed, device."""
        core = env.unwrapped.core if hasattr(env, "unwrapped") else env.core
        config = env.unwrapped.config
        params.check_scenario(config)
        kwargs.setdefault("length_mean", config.world.catalog.length_mean)
        if config.world.lifetime.enabled:
            kwargs.setdefault("horizon_days", config.world.lifetime.horizon_days)
        return cls(kind, core.single_observation_space, core.item_features, core.n_items, params, **kwargs)

    @classmethod
    def for_scenario(
        cls, kind: str, scenario: Any, params: SupervisedParams = SupervisedParams(), **kwargs: Any
    ) -> SupervisedRecommender:
        """Sizes, item features and length_mean read from a ScenarioConfig (an env of it is built to
        read them); `kwargs`: model, seed, device."""
        from envs.core import RecommenderCore

        params.check_scenario(scenario)
        probe = RecommenderCore(scenario, 1, kwargs.get("seed", 0))
        kwargs.setdefault("length_mean", scenario.world.catalog.length_mean)
        if scenario.world.lifetime.enabled:
            kwargs.setdefault("horizon_days", scenario.world.lifetime.horizon_days)
        return cls(kind, probe.single_observation_space, probe.item_features, probe.n_items, params, **kwargs)

    def _build(self) -> None:
        """Fresh weights, optimizer, shuffling RNG and empty replay, all from the seed."""
        with _seeded(self.seed, self.device):
            self.net = EngagementModel(self.kind, self.config, self.item_features, self.n_positions)
        self.net.to(self.device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.params.lr)
        self._rng = np.random.default_rng(self.seed)
        self._features = None if self.item_features is None else torch.as_tensor(self.item_features)
        self._logged: _Examples | None = None
        self._fresh = _ReplayBuffer(self.params.replay_capacity)
        self.losses: list[float] = []
        self.refit_losses: list[float] = []
        self.versions = []
        self.n_observed = 0
        self.n_refits = 0
        self._base: dict[str, Any] | None = None  # a calendar deployment's version 0 (see _snapshot)
        self._fit_seconds = 0.0

    def _snapshot(self) -> dict[str, Any]:
        """Copies of the weights, the optimizer's state and the shuffling RNG's state."""
        return copy.deepcopy(
            dict(net=self.net.state_dict(), optimizer=self.optimizer.state_dict(), rng=self._rng.bit_generator.state)
        )

    def _restore(self, snapshot: dict[str, Any]) -> None:
        """Back to a `_snapshot` (copied again: the snapshot stays as it was)."""
        snapshot = copy.deepcopy(snapshot)
        self.net.load_state_dict(snapshot["net"])
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self._rng.bit_generator.state = snapshot["rng"]

    def _frozen_copy(self) -> EngagementModel:
        """A serving copy of the current weights (eval mode, no gradients): a model version."""
        net = copy.deepcopy(self.net).eval()
        return net.requires_grad_(False)

    def with_retraining(self, retrain_every: int = 0, days: float = 0.0) -> SupervisedRecommender:
        """A copy of this (fitted) recommender that refits every `retrain_every` served steps or,
        on a lifetime scenario, every `days` days from its deployment day (one of the two)."""
        check_int("algo", "retrain_every", retrain_every, 0)
        check_range("algo", "retrain_every_days", days, 0.0, MAX_DAYS)
        if bool(retrain_every) == bool(days):
            raise ValueError("with_retraining takes one cadence: retrain_every (served steps) or days")
        if days and not self.lifetime:
            raise ValueError("algo.retrain_every_days is for lifetime scenarios: this env has no calendar")
        other = copy.deepcopy(self)
        other.params = dataclasses.replace(self.params, retrain_every=retrain_every, retrain_every_days=float(days))
        other.name = self.kind + other.params.name_suffix
        other._dated = self.lifetime and (self.serves_from_day > 0 or days > 0)
        other._start_serving()  # a calendar deployment starts again from the fitted version 0
        return other

    # ------------------------------------------------------------------ Policy
    def bind(self, env: Any) -> None:
        """Read the slate size and check the catalog's length_mean; forget the previous episode's done mask."""
        config = env.unwrapped.config if hasattr(env, "unwrapped") else env.config
        length_mean = float(config.world.catalog.length_mean)
        if not np.isclose(length_mean, self.length_mean):
            raise ValueError(
                f"env catalog length_mean={length_mean} but the recommender was built with "
                f"length_mean={self.length_mean} (use SupervisedRecommender.from_env)"
            )
        self.slate_size = int(config.env.slate_size)
        if self.lifetime and not np.isclose(config.world.lifetime.horizon_days, self.horizon_days):
            raise ValueError(
                f"env lifetime.horizon_days={config.world.lifetime.horizon_days} but the recommender was built "
                f"with horizon_days={self.horizon_days} (use SupervisedRecommender.from_env)"
            )
        self._start_serving()

    def _start_serving(self) -> None:
        """Start a new evaluation. Step cadence (or none): forget the clocks; the model and its refits
        so far stay. Calendar deployment: a fresh one from version 0 (the weights, optimizer and
        shuffling RNG as ``fit`` left them, the warm-up reseeded), no served rows, the version
        records restarted."""
        self._clock: np.ndarray | None = None  # [N] each slot's day, as of the next step (calendar)
        self._live: np.ndarray | None = None  # [N] the slot still holds its first user
        self._serving: tuple[np.ndarray, np.ndarray] | None = None  # ([N] version, [N] its cutoff) at act()
        self._lag_sum, self._lag_n, self._refit_seconds = 0.0, 0, 0.0
        # The platform's policy before T: the logging policy, seeded afresh for every evaluation.
        self.warmup = EpsilonPopularity(self.params.epsilon, self.seed) if self.serves_from_day > 0 else None
        if not self._dated:
            return
        if self._base is None:  # not fitted: version 0 is the initial weights
            self._base = self._snapshot()
        self._restore(self._base)
        self._fresh, self.n_refits, self.n_observed = _ReplayBuffer(self.params.replay_capacity), 0, 0
        record = dict.fromkeys(VERSION_RECORD, float("nan"))
        record.update(version=0.0, cutoff=self.serves_from_day, logged_steps=self._logged_steps, fresh_steps=0.0)
        record.update(fresh_rows=0.0, fit_seconds=self._fit_seconds, at_step=0.0, served_steps=0.0)
        self.versions: list[dict[str, float]] = [record]
        self._kept = [_Version(0, self.serves_from_day, self._frozen_copy())]  # oldest first
        self._kept_max = 1

    @property
    def refits(self) -> list[dict[str, float]]:
        """The records of the refit versions of the current calendar deployment (VERSION_RECORD keys)."""
        return self.versions[1:]

    def serving_stats(self) -> dict[str, float]:
        """Scalars of the last evaluation for results.csv: refits and refit_seconds (their fit time)
        and, deployed on a calendar, serving_lag_days (mean over the steps the model served of
        the user's day - the cutoff of the version that served it), versions_kept_max (most model
        versions held at once), refit_past_cutoff (mean over refits of the share of live users past
        the version's cutoff when it was fitted) and served_from_day (T)."""
        if not self._dated:
            return dict(refits=float(self.n_refits), refit_seconds=self._refit_seconds)
        lag = self._lag_sum / self._lag_n if self._lag_n else float("nan")
        return dict(
            refits=float(self.n_refits),
            refit_seconds=float(sum(r["fit_seconds"] for r in self.refits)),
            serving_lag_days=lag,
            versions_kept_max=float(self._kept_max),
            refit_past_cutoff=float(np.mean([r["past_cutoff"] for r in self.refits])) if self.refits else float("nan"),
            served_from_day=self.serves_from_day,
        )

    def scores(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Expected engagement (minutes) of showing each candidate at the top: [N, C] float32.
        Deployed on a calendar: each user's by the newest kept version whose cutoff is <= their
        day (the oldest kept one for users before T, whose slates the warm-up serves), one forward
        pass per version among them."""
        if not self._dated:
            return self._engagement(self.net, obs)
        day = self._sync_clock(obs)
        cutoffs = np.array([v.cutoff for v in self._kept])
        index = np.maximum(serving_versions(cutoffs, day), 0)  # [N] into self._kept
        self._serving = (np.array([v.index for v in self._kept])[index], cutoffs[index])
        if len(self._kept) == 1:
            return self._engagement(self._kept[0].net, obs)
        out = None
        for k in np.unique(index):
            rows = np.flatnonzero(index == k)
            part = self._engagement(self._kept[k].net, {key: np.asarray(v)[rows] for key, v in obs.items()})
            if out is None:
                out = np.empty((len(index), *part.shape[1:]), part.dtype)
            out[rows] = part
        return out

    def _engagement(self, net: EngagementModel, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """[n, C] float32 expected engagement (minutes) of `net` on a batch of observations."""
        click_logit, watch = serve(net, obs, self.device)
        return (torch.sigmoid(click_logit) * watch * self.length_mean).float().cpu().numpy()

    def act(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Greedy: the candidate with the highest expected engagement [N], or the top-K [N, K]."""
        return slate_from_scores(self.scores(obs), self.slate_size)

    # ---------------------------------------------------------------- training
    def fit(self, logs: pd.DataFrame) -> list[float]:
        """Train from scratch (re-seeded weights, empty replay) on logs; returns per-epoch mean losses.

        Loss = BCE(click logit, click) + squared error of the watch time (in mean lengths) on
        clicked rows. Empty logs, missing columns or ids outside the catalog are a ValueError.
        """
        logs = validate_logs(logs, self.n_items, lifetime=self.lifetime)
        if logs["position"].max() >= self.n_positions or logs["position"].min() < 0:
            raise ValueError(
                f"logs hold slate positions outside 0..{self.n_positions - 1} "
                f"(the observation has {self.n_positions} candidates)"
            )
        started = time.perf_counter()
        self._build()
        self._logged = step_examples(logs, self.config.history_len, self.length_mean, self.lifetime)
        self.losses = [self._train_epoch(self._logged) for _ in range(self.params.epochs)]
        self._fit_seconds = time.perf_counter() - started
        self._start_serving()  # a calendar deployment starts from these weights (version 0)
        return list(self.losses)

    def _batch(self, data: _Examples | _Chain, rows: np.ndarray) -> tuple[dict[str, Tensor], Tensor, Tensor, Tensor]:
        """(obs with one candidate per row [B, 1], positions [B, 1], click [B], watch [B] in mean lengths)."""
        batch = data.rows(rows)
        obs = {k: torch.from_numpy(batch[k]) for k in _HISTORY_KEYS}
        target = torch.from_numpy(batch["target_item"])[:, None]
        obs["candidate_items"] = target
        if self._features is not None:
            obs["candidate_features"] = self._features[target]
        obs = {k: v.to(self.device) for k, v in obs.items()}
        positions = torch.from_numpy(batch["target_position"])[:, None].to(self.device)
        click = torch.from_numpy(batch["click"]).to(self.device)
        watch = torch.from_numpy(batch["watch_time"] / np.float32(self.length_mean)).to(self.device)
        return obs, positions, click, watch

    def _train_epoch(self, data: _Examples | _Chain) -> float:
        """One shuffled pass over `data`; returns the mean loss per example."""
        order = self._rng.permutation(len(data))
        size = self.params.batch_size
        return self._train_on(data, [order[i : i + size] for i in range(0, len(order), size)])

    def _train_on(self, data: _Examples | _Chain, batches: list[np.ndarray]) -> float:
        """One Adam step per batch of example rows of `data`; returns the mean loss per example."""
        self.net.train()
        total, count = 0.0, 0
        with _seeded(int(self._rng.integers(2**31)), self.device):  # dropout, if any
            for rows in batches:
                obs, positions, click, watch = self._batch(data, rows)
                click_logit, watch_pred = self.net(obs, positions)
                loss = F.binary_cross_entropy_with_logits(click_logit[:, 0], click)
                clicked = click > 0
                if clicked.any():
                    loss = loss + F.mse_loss(watch_pred[clicked, 0], watch[clicked])
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
                self.optimizer.step()
                total += float(loss.detach()) * len(rows)
                count += len(rows)
        self.net.eval()
        return total / max(count, 1)

    # --------------------------------------------------------------- retraining
    def observe(
        self, obs: Mapping[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, info: Mapping[str, np.ndarray]
    ) -> None:
        """Buffer the served step's impressions; every `retrain_every` calls, refit one epoch.

        obs is what act() saw; rewards [N]; info["served"] [N] marks slots whose action was
        shown (False while autoresetting), info["position"] [N] the clicked slot (-1: none).
        Each slate item becomes an impression with its position, as in the logs. No-op when
        retrain_every is 0. Deployed on a calendar, see `_observe_dated`.
        """
        if self._dated:
            self._observe_dated(obs, actions, rewards, info)
            return
        if not self.params.retrain_every:
            return
        rows = np.flatnonzero(np.asarray(info["served"], dtype=bool))
        if rows.size:
            self._fresh.push(self._served_examples(obs, actions, rewards, np.asarray(info["position"]), rows))
        self.n_observed += 1
        if self.n_observed % self.params.retrain_every == 0:
            self._refit()

    def _observe_dated(
        self, obs: Mapping[str, np.ndarray], actions: np.ndarray, rewards: np.ndarray, info: Mapping[str, np.ndarray]
    ) -> None:
        """The calendar deployment's bookkeeping after a step (lifetime scenarios; obs, actions as
        act() saw them, rewards [N], info with `day` [N] (clock after the step), `served` [N] and
        the harness's `evaluated` [N] (this model's own action, in a counted life; `served` when
        absent) and `done` [N] (the user ended at this step; none when absent)). Counts the serving
        lag of the model's own steps and, refitting in days, buffers them with the day they were
        served on; then moves the clocks, fits every version that has become due and drops the
        versions no live user can be served by again (module docstring).
        """
        served = np.asarray(info["served"], dtype=bool)
        own = np.asarray(info.get("evaluated", served), dtype=bool) & served
        day = self._sync_clock(obs)  # [N] when this step was served
        rows = np.flatnonzero(own)
        if rows.size:
            if self._serving is None:
                raise RuntimeError("observe() got a step the model served but act() was not called for it")
            version, cutoff = self._serving[0][rows], self._serving[1][rows]
            lag = day[rows] - cutoff
            assert (lag >= 0).all(), f"a version served a user {-lag.min():g} days before its cutoff"
            self._lag_sum += float(lag.sum())
            self._lag_n += rows.size
            for v, n in zip(*np.unique(version, return_counts=True)):
                self.versions[v]["served_steps"] += float(n)
            if self.params.retrain_every_days:
                examples = self._served_examples(obs, actions, rewards, np.asarray(info["position"]), rows)
                examples.day = day[rows].copy()
                self._fresh.push(examples)
        self._serving = None
        # A user who ended (their clock now: a next visit that will not come) or a slot restarted
        # with a new user has left the deployment.
        self._live &= served & ~np.asarray(info.get("done", np.zeros_like(served)), dtype=bool)
        self._clock = np.asarray(info["day"], dtype=np.float64).copy()
        self.n_observed += 1
        self._fit_due()
        self._drop_unreachable()

    def _sync_clock(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """[N] each slot's day now. At an evaluation's first step (act or observe), read from the
        context's progress (day / horizon) and with every slot live (and any version already due
        fitted); from then on the clocks `observe` keeps from info["day"]."""
        n = len(obs["context"])
        if self._clock is None:
            self._clock = np.asarray(obs["context"])[:, 2].astype(np.float64) * self.horizon_days
            self._live = np.ones(n, dtype=bool)
            self._fit_due()
        elif len(self._clock) != n:
            raise ValueError(
                f"a deployment on a calendar serves the {len(self._clock)} slots of its evaluation, got {n} "
                "(bind(env) starts another)"
            )
        return self._clock

    def _fit_due(self) -> None:
        """Fit the version of every refit day c = T + kD that the fastest live user has reached
        (k = the versions so far), in order; each on the rows that exist now."""
        cadence = self.params.retrain_every_days
        if not cadence or not self._live.any():
            return
        days = self._clock[self._live]
        while days.max() >= (cutoff := self.serves_from_day + cadence * len(self.versions)):
            self._fit_version(cutoff, days)

    def _fit_version(self, cutoff: float, days: np.ndarray) -> None:
        """Fine-tune the newest version on the logs + every served row there is (the newest
        replay_capacity steps), all dated before `cutoff` (asserted), and keep the result as the
        version for `cutoff`, with its record. `days` [L]: the live users' clocks, for the record."""
        started = time.perf_counter()
        fresh = self._fresh_examples()
        latest = fresh.max_day() if fresh is not None else float("nan")
        assert fresh is None or latest < cutoff, (
            f"the version for day {cutoff:g} would train on a row of day {latest:g}"
        )
        parts = [part for part in (self._logged, fresh) if part is not None]
        if parts:  # (an unfitted model that served nothing yet has nothing to learn from)
            self._train_parts(parts)
        self._kept.append(_Version(len(self.versions), cutoff, self._frozen_copy()))
        self._kept_max = max(self._kept_max, len(self._kept))
        self.n_refits += 1
        self.versions.append(
            dict(
                version=float(len(self.versions)),
                cutoff=float(cutoff),
                fastest_day=float(days.max()),
                slowest_day=float(days.min()),
                past_cutoff=float((days >= cutoff).mean()),
                logged_steps=self._logged_steps,
                fresh_steps=float(fresh.n_steps if fresh is not None else 0),
                fresh_rows=float(len(fresh) if fresh is not None else 0),
                fresh_max_day=latest,
                fit_seconds=time.perf_counter() - started,
                at_step=float(self.n_observed),
                served_steps=0.0,
            )
        )

    def _drop_unreachable(self) -> None:
        """Drop the kept versions older than the newest one every live user has reached: clocks
        only move forward, so none of them can serve anyone again."""
        if len(self._kept) == 1 or not self._live.any():
            return
        cutoffs = np.array([v.cutoff for v in self._kept])
        reached = int(serving_versions(cutoffs, self._clock[self._live].min(keepdims=True))[0])
        if reached > 0:
            del self._kept[:reached]

    def _served_examples(
        self,
        obs: Mapping[str, np.ndarray],
        actions: np.ndarray,
        rewards: np.ndarray,
        position: np.ndarray,
        rows: np.ndarray,
    ) -> _Examples:
        candidates = np.asarray(obs["candidate_items"])
        n, c = candidates.shape
        slates = dedupe_slates(np.asarray(actions).reshape(n, -1).astype(np.int64), c)[rows]  # as the env does
        items = np.take_along_axis(candidates[rows], slates, axis=1).astype(np.int64)  # [n, K]
        k = items.shape[1]
        hit = np.arange(k)[None, :] == position[rows][:, None]  # the clicked slot
        reward = np.asarray(rewards, dtype=np.float32)[rows]
        history = {key: np.asarray(obs[key])[rows].astype(np.float32) for key in _HISTORY_KEYS}
        history["history_items"] = np.asarray(obs["history_items"])[rows].round().astype(np.int32)
        return _Examples(
            **history,
            step_index=np.repeat(np.arange(len(rows)), k),
            target_item=items.ravel(),
            target_position=np.tile(np.arange(k), len(rows)),
            click=hit.ravel().astype(np.float32),
            watch_time=np.where(hit, reward[:, None], np.float32(0.0)).ravel().astype(np.float32),
        )

    @property
    def _logged_steps(self) -> float:
        """User-steps of the logs the model was fitted on (0 before a fit)."""
        return float(self._logged.n_steps if self._logged is not None else 0)

    def _fresh_examples(self) -> _ReplayBuffer | None:
        """The served rows buffered for refitting (the newest replay_capacity steps), or None."""
        return self._fresh if len(self._fresh) else None

    def _refit(self) -> None:
        """Step cadence: fine-tune on the original logs + the fresh data (newest replay_capacity steps)."""
        started = time.perf_counter()
        parts = [part for part in (self._logged, self._fresh_examples()) if part is not None]
        if not parts:
            return
        self._train_parts(parts)
        self.n_refits += 1
        self._refit_seconds += time.perf_counter() - started

    def _train_parts(self, parts: list[_Examples | _ReplayBuffer]) -> None:
        """Fine-tune on `parts` (non-empty), read in place as one chain of their rows: a whole epoch
        over them, or `refit_batches` minibatches in which each part weighs the same; the loss goes
        to refit_losses."""
        data = _Chain(parts)
        if not self.params.refit_batches:
            self.refit_losses.append(self._train_epoch(data))
            return
        sizes = np.array([len(part) for part in parts], dtype=np.float64)
        p = np.repeat(1.0 / (len(parts) * sizes), sizes.astype(np.int64))  # each part weighs the same
        size = min(self.params.batch_size, len(data))
        batches = [self._rng.choice(len(data), size=size, p=p) for _ in range(self.params.refit_batches)]
        self.refit_losses.append(self._train_on(data, batches))
