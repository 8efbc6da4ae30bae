"""Seasonal drift: periodic modulation of each topic's appeal over calendar time.

In session worlds the calendar counts episode steps (`unit: step`: a cycle of `period` steps, a
stand-in for a season inside one long session). In lifetime worlds it counts days (`unit: day`):
a yearly cycle of `period` days and a weekly cycle of 7 days with its own amplitude, both read off
the date, so every user feels the same season on the same day. Seasons change no state: the
appeal is a function of the date, added to the user's interests by `personal_season`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from simulator.drift import DriftFamily, DriftParams
from simulator.params import check_bool, check_range

UNITS = ("step", "day")
WEEK_DAYS = 7.0


@dataclass(frozen=True)
class SeasonalParams(DriftParams):
    FAMILY_NAME: ClassVar[str] = "seasonal"
    unit: str = "step"  # the calendar the cycles follow: episode steps, or days (lifetime worlds)
    period: float = 60  # length of the main cycle: steps, or days (365.25: a year)
    amplitude: float = 0.6  # appeal shift at the main cycle's peak, in interest units
    weekly_amplitude: float = 0.0  # appeal shift at the weekly cycle's peak (unit: day only)
    random_offset: bool = True  # session worlds: users start at different calendar times
    reach: float = 1.0  # how far down the taste scale a season is felt (see personal_season)

    def __post_init__(self) -> None:
        super().__post_init__()
        o = self.FAMILY_NAME
        if self.unit not in UNITS:
            raise ValueError(f"{o}.unit must be one of {', '.join(UNITS)}, got {self.unit!r}")
        check_range(o, "period", self.period, 2.0, 100_000.0)
        if self.unit == "step" and self.period != int(self.period):
            raise ValueError(f"{o}.period must be a whole number of steps with unit step, got {self.period!r}")
        check_range(o, "amplitude", self.amplitude, 0.0, 10.0)
        check_range(o, "weekly_amplitude", self.weekly_amplitude, 0.0, 10.0)
        if self.weekly_amplitude and self.unit != "day":
            raise ValueError(f"{o}.weekly_amplitude needs unit day (a week is 7 days), got unit {self.unit!r}")
        check_bool(o, "random_offset", self.random_offset)
        check_range(o, "reach", self.reach, 0.0, 1.0)


def topic_phases(n_topics: int) -> np.ndarray:
    """[T] phases spread evenly over the cycle, so some topic is always in season."""
    return (2.0 * np.pi * np.arange(n_topics) / n_topics).astype(np.float32)


def weekly_phases(n_topics: int) -> np.ndarray:
    """[T] phases of the weekly cycle: spread evenly too, in another order than the yearly ones
    (the topics of a weekend are not those of a summer)."""
    order = (np.arange(n_topics) * 3 + 1) % max(n_topics, 1)
    return (2.0 * np.pi * order / max(n_topics, 1)).astype(np.float32)


def season_angle(calendar: np.ndarray, period: float) -> np.ndarray:
    """[N] angle of the cycle at calendar time [N]."""
    return (2.0 * np.pi / period) * np.asarray(calendar).astype(np.float32)


def _cycle(angle: np.ndarray, phases: np.ndarray, amplitude: float) -> np.ndarray:
    # sin(a + p) = sin a cos p + cos a sin p: two outer products instead of N*T sines.
    s, c = np.sin(angle)[:, None], np.cos(angle)[:, None]
    return np.float32(amplitude) * (s * np.cos(phases) + c * np.sin(phases))


def seasonal_appeal(calendar: np.ndarray, phases: np.ndarray, params: SeasonalParams) -> np.ndarray:
    """[N, T] additive appeal of the main cycle, amplitude * magnitude * sin(angle + phase_t); 0 when off."""
    return _cycle(season_angle(calendar, params.period), phases, params.amplitude * params.scale)


def weekly_appeal(day: np.ndarray, phases: np.ndarray, params: SeasonalParams) -> np.ndarray:
    """[N, T] additive appeal of the weekly cycle at `day` [N] (days); 0 when off."""
    return _cycle(season_angle(day, WEEK_DAYS), phases, params.weekly_amplitude * params.scale)


def personal_season(appeal: np.ndarray, interest: np.ndarray, reach: float = 1.0) -> np.ndarray:
    """[N, T] the season as a user feels it: the appeal shift [N, T] weighted by the user's
    affinity for the topic, clip((interest + reach) / (1 + reach), 0, 1). In season, a topic gains
    most with those who like it and nothing with those who hate it: seasons move tastes, they do
    not override them (an additive shift would make everyone watch the in-season topic).

    `reach` says how far down the taste scale the season is felt. 1 (default): everyone but those
    who hate the topic, in proportion to (1 + interest) / 2, so a user indifferent to it (interest
    0) feels half the season. 0: only those who like the topic (interest > 0), in proportion to
    how much; the indifferent feel nothing. The smaller the reach, the less a season is worth to
    a policy that does not know the user's tastes: "serve what is in season" pays only with the
    users it suits."""
    r = np.float32(reach)
    return appeal * np.clip((interest + r) / (np.float32(1.0) + r), np.float32(0.0), np.float32(1.0))


FAMILY = DriftFamily("seasonal", SeasonalParams)  # a function of the date: no state, no hooks
