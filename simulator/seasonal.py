"""Seasonal drift: periodic modulation of each topic's appeal over calendar time.

In session worlds the calendar counts episode steps (`unit: step`: a cycle of `period` steps, a
stand-in for a season inside one long session). In lifetime worlds it counts days (`unit: day`):
a yearly cycle of `period` days and a weekly cycle of 7 days with its own amplitude, both read off
the date, so every user feels the same season on the same day. Seasons change no state: the
appeal is a function of the date, added to the user's interests by `personal_season`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from simulator.drift import DriftFamily, DriftParams
from simulator.params import check_bool, check_range

if TYPE_CHECKING:
    from simulator.state import UserState
    from simulator.world import World, WorldConfig

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


@dataclass(frozen=True)
class Calendar:
    """The seasons' structure: phases [T] of the main and weekly cycles, and in session worlds with
    seasons on the [period, T] table of the main cycle's appeal, looked up by calendar step."""

    phases: np.ndarray
    week_phases: np.ndarray
    table: np.ndarray | None


class SeasonalFamily(DriftFamily):
    """Seasons: a function of the date, no per-user state; in session worlds users start at random
    points of the cycle (`random_offset`)."""

    name = "seasonal"
    params = SeasonalParams

    def check(self, params: SeasonalParams, config: WorldConfig) -> None:
        in_days = config.lifetime.enabled
        clock = "days (lifetime worlds)" if in_days else "episode steps (session worlds)"
        if params.unit != ("day" if in_days else "step"):
            raise ValueError(f"seasonal.unit must be {'day' if in_days else 'step'}: the calendar counts {clock}")

    def build(self, world: World, rng: np.random.Generator) -> Calendar:
        p, t = self.config(world.config), world.config.catalog.n_topics
        phases = topic_phases(t)
        table = seasonal_appeal(np.arange(int(p.period)), phases, p) if p.scale and not world.lifetime else None
        return Calendar(phases=phases, week_phases=weekly_phases(t), table=table)

    def new_users(self, world: World, idx: np.ndarray, rng: np.random.Generator, stage: str) -> None:
        """Session worlds: a new user starts at a random point of the cycle (lifetime worlds share one calendar)."""
        p = self.config(world.config)
        if stage == "clock" and not world.lifetime:
            offset = rng.integers(0, int(p.period), size=idx.size) if p.random_offset else 0
            world.state.calendar_offset[idx] = offset

    def appeal(self, world: World, state: UserState) -> np.ndarray | None:
        """[N, T] the seasons' additive appeal at the users' calendar time (None when seasons are off);
        for the world's own state, computed once per clock change (every step scores several slates)."""
        p = self.config(world.config)
        if not p.scale:
            return None
        calendar: Calendar = world.structure[self.name]
        if not world.lifetime:
            at = world.calendar_of(state).astype(np.int64) % int(p.period)
            return calendar.table[at]
        current = state is world.state
        if current and self.name in world.clock_cache:
            return world.clock_cache[self.name]
        date = world.calendar_of(state)
        appeal = seasonal_appeal(date, calendar.phases, p)
        if p.weekly_amplitude:
            appeal += weekly_appeal(date, calendar.week_phases, p)
        if current:
            world.clock_cache[self.name] = appeal
        return appeal

    def taste_term(self, world: World, state: UserState) -> np.ndarray | None:
        """The season as each user feels it (`personal_season`)."""
        appeal = self.appeal(world, state)
        if appeal is None:
            return None
        return personal_season(appeal, state.interest, self.config(world.config).reach)


FAMILY = SeasonalFamily()
