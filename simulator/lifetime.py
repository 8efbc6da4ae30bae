"""Users with lifetimes: a calendar in days, sessions that end and return visits that may never come.

A lifetime world keeps every user across sessions. Time is a clock in days: a step takes the
minutes the user spent (browsing plus watching), and when a session ends (the budget is spent,
or the user left it) the user either churns, never to return, or comes back after a gap drawn
from the return model below; the drift families then act on the days in between
(`simulator.drift`: between_visits). The next session starts with a fresh budget and part of
the satisfaction the last one ended with.

The return model. How a session went decides what comes next, as on real platforms, where
retention follows satisfaction and disappointment, not the minutes watched alone:

    rate  = return_rate * activity * exp(satisfaction_weight * (satisfaction_end - reference_satisfaction)
                                         - letdown_weight * (letdown - reference_letdown)
                                         + watch_weight * (watch_share - 1))
    gap   ~ a distribution of mean 1 / rate days (exponential, or Weibull of shape `gap_shape`),
            at least `min_gap_days`
    churn ~ Bernoulli(sigmoid(logit(churn_base) - churn_satisfaction_weight * (satisfaction_end
                                 - reference_satisfaction) + churn_letdown_weight * (letdown - reference_letdown)))

activity [N] is a per-user trait (log-normal, mean 1); letdown is the session's mean clickbait
letdown per click (attractiveness above the value the user got: `response.letdown`); watch_share
the minutes watched over the mean session budget. `return_rate` and `churn_base` hold for a
reference session (satisfaction 0.5 at the end, letdown 0.2 per click, a budget's worth watched).
A recommender that burns a user out tonight (clickbait, what does not suit them) loses next
week's visit, or the user.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from simulator.params import check_bool, check_range

GAP_DISTRIBUTIONS = ("exponential", "weibull")
MAX_GAP_DAYS = 36_500.0  # a century: longer gaps (a vanishing rate) are capped here, past any horizon
MINUTES_PER_DAY = 1440.0


@dataclass(frozen=True)
class LifetimeParams:
    enabled: bool = False
    horizon_days: float = 60.0  # an episode is one user's life over this many days (truncated there)
    first_visit_days: float = 1.0  # first visits spread uniformly over the first this many days
    calendar_start: float = 0.0  # day of the year (and, mod 7, of the week: 0 = Monday) of day 0
    return_rate: float = 0.5  # visits per day of a user of average activity after a reference session
    activity_sigma: float = 0.5  # spread of the per-user activity trait (log-normal sigma; mean 1)
    satisfaction_weight: float = 2.0  # satisfied users come back sooner
    letdown_weight: float = 1.0  # clickbait letdown per click keeps them away
    watch_weight: float = 0.3  # a session that used its budget on watching builds the habit
    reference_satisfaction: float = 0.5  # the reference session's satisfaction at its end
    reference_letdown: float = 0.2  # ... and mean letdown per click
    gap: str = "weibull"  # distribution of the days between visits: exponential or weibull
    gap_shape: float = 1.5  # Weibull shape (1 = exponential; > 1: more regular visits)
    min_gap_days: float = 0.02  # about half an hour between two sessions at least
    churn_base: float = 0.015  # probability of never coming back after a reference session
    churn_satisfaction_weight: float = 4.0  # dissatisfied users churn more
    churn_letdown_weight: float = 2.0  # so do let-down ones
    satisfaction_carryover: float = 0.5  # the next session starts init + carryover * (end - init)

    def __post_init__(self) -> None:
        o = "lifetime"
        check_bool(o, "enabled", self.enabled)
        check_range(o, "horizon_days", self.horizon_days, 0.0, 3650.0, lo_open=True)
        check_range(o, "first_visit_days", self.first_visit_days, 0.0, 3650.0)
        if self.first_visit_days > self.horizon_days:
            raise ValueError(
                f"{o}.first_visit_days ({self.first_visit_days}) must be <= {o}.horizon_days ({self.horizon_days})"
            )
        check_range(o, "calendar_start", self.calendar_start, 0.0, 366.0)
        check_range(o, "return_rate", self.return_rate, 0.001, 100.0)
        check_range(o, "activity_sigma", self.activity_sigma, 0.0, 3.0)
        for name in ("satisfaction_weight", "letdown_weight", "watch_weight"):
            check_range(o, name, getattr(self, name), 0.0, 50.0)
        check_range(o, "reference_satisfaction", self.reference_satisfaction, 0.0, 1.0)
        check_range(o, "reference_letdown", self.reference_letdown, 0.0, 10.0)
        if self.gap not in GAP_DISTRIBUTIONS:
            raise ValueError(f"{o}.gap must be one of {', '.join(GAP_DISTRIBUTIONS)}, got {self.gap!r}")
        check_range(o, "gap_shape", self.gap_shape, 0.1, 20.0)
        check_range(o, "min_gap_days", self.min_gap_days, 0.0, 30.0)
        check_range(o, "churn_base", self.churn_base, 0.0, 1.0, hi_open=True)
        check_range(o, "churn_satisfaction_weight", self.churn_satisfaction_weight, 0.0, 50.0)
        check_range(o, "churn_letdown_weight", self.churn_letdown_weight, 0.0, 50.0)
        check_range(o, "satisfaction_carryover", self.satisfaction_carryover, 0.0, 1.0)


def sample_activity(params: LifetimeParams, n: int, rng: np.random.Generator) -> np.ndarray:
    """[n] per-user activity traits: log-normal with mean 1."""
    sigma = params.activity_sigma
    return np.exp(rng.normal(-0.5 * sigma**2, sigma, size=n)).astype(np.float32)


def return_rate(
    satisfaction_end: np.ndarray,
    letdown: np.ndarray,
    watch_share: np.ndarray,
    activity: np.ndarray,
    params: LifetimeParams,
) -> np.ndarray:
    """[M] visits per day after a session that ended with these figures (all [M])."""
    z = (
        params.satisfaction_weight * (satisfaction_end - params.reference_satisfaction)
        - params.letdown_weight * (letdown - params.reference_letdown)
        + params.watch_weight * (watch_share - 1.0)
    )
    return (params.return_rate * activity * np.exp(np.clip(z, -30.0, 30.0))).astype(np.float64)


def churn_probability(satisfaction_end: np.ndarray, letdown: np.ndarray, params: LifetimeParams) -> np.ndarray:
    """[M] probability that the user never returns after a session that ended so."""
    base = math.log(params.churn_base / (1.0 - params.churn_base)) if params.churn_base > 0 else -math.inf
    z = (
        base
        - params.churn_satisfaction_weight * (satisfaction_end - params.reference_satisfaction)
        + params.churn_letdown_weight * (letdown - params.reference_letdown)
    )
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60.0, 60.0)))


def sample_gap(rate: np.ndarray, uniform: np.ndarray, params: LifetimeParams) -> np.ndarray:
    """[M] days until the next visit, of mean ~1 / rate [M], by inverse CDF of one uniform [M] each
    (fixed draws whatever happened: common random numbers)."""
    tail = -np.log1p(-np.clip(uniform.astype(np.float64), 0.0, 1.0 - 1e-12))  # Exp(1)
    if params.gap == "exponential":
        gap = tail / rate
    else:  # weibull of the given shape, scaled to mean 1 / rate
        k = params.gap_shape
        gap = tail ** (1.0 / k) / (rate * math.gamma(1.0 + 1.0 / k))
    return np.clip(gap, params.min_gap_days, MAX_GAP_DAYS)


def next_satisfaction(satisfaction_end: np.ndarray, initial: float, params: LifetimeParams) -> np.ndarray:
    """[M] satisfaction a new session starts with: part of how the last one ended."""
    return (initial + params.satisfaction_carryover * (satisfaction_end - initial)).astype(np.float32)
