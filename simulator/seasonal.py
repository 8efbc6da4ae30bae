"""Seasonal drift: periodic modulation of each topic's appeal over calendar time."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.params import check_bool, check_int, check_range


@dataclass(frozen=True)
class SeasonalParams:
    enabled: bool = False
    magnitude: float = 1.0
    period: int = 60  # steps per cycle
    amplitude: float = 0.6  # appeal shift at the peak, in interest units
    random_offset: bool = True  # users start at different calendar times

    def __post_init__(self) -> None:
        check_bool("seasonal", "enabled", self.enabled)
        check_range("seasonal", "magnitude", self.magnitude, 0.0)
        check_int("seasonal", "period", self.period, 2)
        check_range("seasonal", "amplitude", self.amplitude, 0.0, 10.0)
        check_bool("seasonal", "random_offset", self.random_offset)

    @property
    def scale(self) -> float:
        return self.amplitude * self.magnitude if self.enabled else 0.0


def topic_phases(n_topics: int) -> np.ndarray:
    """[T] phases spread evenly over the cycle, so some topic is always in season."""
    return (2.0 * np.pi * np.arange(n_topics) / n_topics).astype(np.float32)


def season_angle(calendar: np.ndarray, period: int) -> np.ndarray:
    """[N] angle of the cycle at calendar time [N]."""
    return (2.0 * np.pi / period) * calendar.astype(np.float32)


def seasonal_appeal(calendar: np.ndarray, phases: np.ndarray, params: SeasonalParams) -> np.ndarray:
    """[N, T] additive appeal amplitude * sin(angle + phase_t); zero when off."""
    angle = season_angle(calendar, params.period)
    # sin(a + p) = sin a cos p + cos a sin p: two outer products instead of N*T sines.
    s, c = np.sin(angle)[:, None], np.cos(angle)[:, None]
    return np.float32(params.scale) * (s * np.cos(phases) + c * np.sin(phases))


def personal_season(appeal: np.ndarray, interest: np.ndarray) -> np.ndarray:
    """[N, T] the season as a user feels it: the appeal shift [N, T] weighted by the user's
    affinity for the topic, (1 + interest) / 2 in [0, 1]. In season, a topic gains most with
    those who like it and nothing with those who hate it: seasons move tastes, they do not
    override them (an additive shift would make everyone watch the in-season topic)."""
    return appeal * (np.float32(0.5) * (np.float32(1.0) + interest))
