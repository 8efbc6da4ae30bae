"""The dated deployment of a supervised recommender on a calendar (lifetime scenarios): model versions,
each labelled with the cutoff day it was trained up to, the users' clocks, which version serves whom,
and when a new version is due.

A recommender trained on the logs of days [0, T) serves from day T (agents.supervised); refitting every
D days, it adds the versions of the refit days c = T + D, T + 2D, ... The fitting is the recommender's
(`fit_version`, called here when a version is due); the calendar is kept here.

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
The served rows wait in a ring buffer of replay_capacity user-steps (agents.training_examples.ReplayBuffer)
and a refit reads them in place with the logs (ExampleChain).
``serving_stats()`` reports the refits, their fit seconds, the serving lag (mean over served steps
of day - the serving version's cutoff) and the most versions kept at once; ``versions`` holds one
record per version (VERSION_RECORD). Each evaluation (``bind``) is a fresh deployment: it starts again from
version 0 with no served rows (a previous evaluation's rows would be from the new users' future).
A user leaves the deployment at the step their life ends (the harness's info["done"]; their clock
then is a next visit that will not come), and so does a slot the harness restarts with a new user:
neither moves its calendar nor enters the training data again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

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
# What the recommender's fit of a version adds to its record (the rest is the calendar's).
FIT_RECORD = ("logged_steps", "fresh_steps", "fresh_rows", "fresh_max_day", "fit_seconds", "at_step")


@dataclass(frozen=True)
class ModelVersion:
    """A model version of a calendar deployment: its number, its cutoff day, its serving weights."""

    index: int
    cutoff: float
    net: nn.Module


def serving_versions(cutoffs: np.ndarray, days: np.ndarray) -> np.ndarray:
    """[N] int: for each day of `days` [N], the newest of the model versions of `cutoffs` [V]
    (increasing) whose cutoff is <= that day, as an index into `cutoffs`; -1 before the first."""
    return np.searchsorted(np.asarray(cutoffs, dtype=np.float64), np.asarray(days, dtype=np.float64), side="right") - 1


class Deployment:
    """One evaluation's calendar deployment (a fresh one per evaluation: module docstring).

    serves_from_day: T; cadence_days: D (0: no refits); horizon_days: the lifetime horizon (a slot's
    day at the first step is its context's progress times it); base: version 0's serving weights (the
    fit on the logs of [0, T)); base_record: version 0's FIT_RECORD fields; fit_version(cutoff) ->
    (serving weights, FIT_RECORD fields): the recommender's fit of the version for day `cutoff`, on
    every row that exists when it is called (all dated before the cutoff).

    clock [N]: each slot's day as of the next step; live [N]: the slot still holds its first user;
    serving: ([N] version, [N] its cutoff) of the last scores() call, until observe; versions: one
    record per version fitted (VERSION_RECORD keys); kept: the versions that may still serve someone,
    oldest first.
    """

    def __init__(
        self,
        serves_from_day: float,
        cadence_days: float,
        horizon_days: float,
        base: nn.Module,
        base_record: Mapping[str, float],
        fit_version: Callable[[float], tuple[nn.Module, Mapping[str, float]]],
    ) -> None:
        self.serves_from_day, self.cadence_days, self.horizon_days = serves_from_day, cadence_days, horizon_days
        self.fit_version = fit_version
        self.clock: np.ndarray | None = None
        self.live: np.ndarray | None = None
        self.serving: tuple[np.ndarray, np.ndarray] | None = None
        self.lag_sum, self.lag_n = 0.0, 0
        record = dict.fromkeys(VERSION_RECORD, float("nan"))
        record.update(version=0.0, cutoff=serves_from_day, served_steps=0.0, **base_record)
        self.versions: list[dict[str, float]] = [record]
        self.kept = [ModelVersion(0, serves_from_day, base)]
        self.kept_max = 1

    @property
    def refits(self) -> list[dict[str, float]]:
        """The records of the refit versions (VERSION_RECORD keys)."""
        return self.versions[1:]

    def stats(self) -> dict[str, float]:
        """refit_seconds (the refits' fit time), serving_lag_days (mean over the steps the model served
        of the user's day - the cutoff of the version that served it), versions_kept_max (most model
        versions held at once), refit_past_cutoff (mean over refits of the share of live users past the
        version's cutoff when it was fitted) and served_from_day (T)."""
        lag = self.lag_sum / self.lag_n if self.lag_n else float("nan")
        return dict(
            refit_seconds=float(sum(r["fit_seconds"] for r in self.refits)),
            serving_lag_days=lag,
            versions_kept_max=float(self.kept_max),
            refit_past_cutoff=float(np.mean([r["past_cutoff"] for r in self.refits])) if self.refits else float("nan"),
            served_from_day=self.serves_from_day,
        )

    def scores(
        self, obs: Mapping[str, np.ndarray], engagement: Callable[[nn.Module, Mapping[str, np.ndarray]], np.ndarray]
    ) -> np.ndarray:
        """engagement(net, obs) of each user by the newest kept version whose cutoff is <= their day (the
        oldest kept one for users before T, whose slates the warm-up serves), one call per version among
        them: [N, ...] as `engagement` returns."""
        day = self.sync_clock(obs)
        cutoffs = np.array([v.cutoff for v in self.kept])
        index = np.maximum(serving_versions(cutoffs, day), 0)  # [N] into self.kept
        self.serving = (np.array([v.index for v in self.kept])[index], cutoffs[index])
        if len(self.kept) == 1:
            return engagement(self.kept[0].net, obs)
        out = None
        for k in np.unique(index):
            rows = np.flatnonzero(index == k)
            part = engagement(self.kept[k].net, {key: np.asarray(v)[rows] for key, v in obs.items()})
            if out is None:
                out = np.empty((len(index), *part.shape[1:]), part.dtype)
            out[rows] = part
        return out

    def record_served(self, obs: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray]:
        """After a step: count the serving lag of the model's own steps (info `served` [N] and the
        harness's `evaluated` [N]: this model's own action, in a counted life; `served` when absent).
        Returns (their rows [n], the day each was served on [n])."""
        served = np.asarray(info["served"], dtype=bool)
        own = np.asarray(info.get("evaluated", served), dtype=bool) & served
        day = self.sync_clock(obs)  # [N] when this step was served
        rows = np.flatnonzero(own)
        if rows.size:
            if self.serving is None:
                raise RuntimeError("observe() got a step the model served but act() was not called for it")
            version, cutoff = self.serving[0][rows], self.serving[1][rows]
            lag = day[rows] - cutoff
            assert (lag >= 0).all(), f"a version served a user {-lag.min():g} days before its cutoff"
            self.lag_sum += float(lag.sum())
            self.lag_n += rows.size
            for v, n in zip(*np.unique(version, return_counts=True)):
                self.versions[v]["served_steps"] += float(n)
        return rows, day[rows].copy()

    def advance(self, info: Mapping[str, Any]) -> None:
        """After a step (and record_served): move the clocks to `info["day"]` [N], take the users who
        ended (info `done` [N]) or whose slot restarted out of the deployment, fit every version that
        has become due and drop the versions no live user can be served by again."""
        served = np.asarray(info["served"], dtype=bool)
        self.serving = None
        # A user who ended (their clock now: a next visit that will not come) or a slot restarted
        # with a new user has left the deployment.
        self.live &= served & ~np.asarray(info.get("done", np.zeros_like(served)), dtype=bool)
        self.clock = np.asarray(info["day"], dtype=np.float64).copy()
        self._fit_due()
        self._drop_unreachable()

    def sync_clock(self, obs: Mapping[str, np.ndarray]) -> np.ndarray:
        """[N] each slot's day now. At an evaluation's first step (scores or record_served), read from the
        context's progress (day / horizon) and with every slot live (and any version already due
        fitted); from then on the clocks `advance` keeps from info["day"]."""
        n = len(obs["context"])
        if self.clock is None:
            self.clock = np.asarray(obs["context"])[:, 2].astype(np.float64) * self.horizon_days
            self.live = np.ones(n, dtype=bool)
            self._fit_due()
        elif len(self.clock) != n:
            raise ValueError(
                f"a deployment on a calendar serves the {len(self.clock)} slots of its evaluation, got {n} "
                "(bind(env) starts another)"
            )
        return self.clock

    def _fit_due(self) -> None:
        """Fit the version of every refit day c = T + kD that the fastest live user has reached
        (k = the versions so far), in order; each on the rows that exist now."""
        if not self.cadence_days or not self.live.any():
            return
        days = self.clock[self.live]
        while days.max() >= (cutoff := self.serves_from_day + self.cadence_days * len(self.versions)):
            net, fitted = self.fit_version(cutoff)
            self.kept.append(ModelVersion(len(self.versions), cutoff, net))
            self.kept_max = max(self.kept_max, len(self.kept))
            record = dict(
                version=float(len(self.versions)),
                cutoff=float(cutoff),
                fastest_day=float(days.max()),
                slowest_day=float(days.min()),
                past_cutoff=float((days >= cutoff).mean()),
                served_steps=0.0,
                **fitted,
            )
            self.versions.append({key: record[key] for key in VERSION_RECORD})

    def _drop_unreachable(self) -> None:
        """Drop the kept versions older than the newest one every live user has reached: clocks
        only move forward, so none of them can serve anyone again."""
        if len(self.kept) == 1 or not self.live.any():
            return
        cutoffs = np.array([v.cutoff for v in self.kept])
        reached = int(serving_versions(cutoffs, self.clock[self.live].min(keepdims=True))[0])
        if reached > 0:
            del self.kept[:reached]
