"""The mutable state of N users, as arrays with a leading user axis."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass
class UserState:
    """Everything that changes while users are simulated. Shapes: N users, T topics, R recent items.

    interest [N, T] long-term interests in [-1, 1]; initial_interest [N, T] at episode start;
    satiation [N, T] in [0, 1]; satisfaction [N] in [0, 1]; budget [N] minutes left (this session);
    step [N] step of the session; episode_step [N] step of the episode (the same in session worlds);
    calendar_offset [N] calendar time at clock 0 (calendar = offset + step, or + day in lifetime worlds);
    lifetime worlds: day [N] the clock (days since the simulation started), first_day [N] of the first
    visit, last_visit [N] end of the previous session (first_day before one), session [N] sessions before
    the current one, activity [N] the return-rate trait, session_watch / session_letdown [N] and
    session_clicks [N] so far this session (the return model reads them);
    novelty_seeking, susceptibility [N] traits; preferred_length [N] log minutes (users.length_fit); community [N];
    shock_draw [N] uniform deciding shock membership; shock_target [N, T] where a shock moves interests;
    recent_items [N, R] last consumed items (-1 = none), recent_ptr [N] ring position;
    trend [T] the population's recent consumption shares (trending topics).
    """

    interest: np.ndarray
    initial_interest: np.ndarray
    satiation: np.ndarray
    satisfaction: np.ndarray
    budget: np.ndarray
    step: np.ndarray
    episode_step: np.ndarray
    calendar_offset: np.ndarray
    day: np.ndarray
    first_day: np.ndarray
    last_visit: np.ndarray
    session: np.ndarray
    activity: np.ndarray
    session_watch: np.ndarray
    session_letdown: np.ndarray
    session_clicks: np.ndarray
    novelty_seeking: np.ndarray
    susceptibility: np.ndarray
    preferred_length: np.ndarray
    community: np.ndarray
    shock_draw: np.ndarray
    shock_target: np.ndarray
    recent_items: np.ndarray
    recent_ptr: np.ndarray
    trend: np.ndarray

    @property
    def n_users(self) -> int:
        return int(self.interest.shape[0])

    def copy(self) -> UserState:
        """Deep copy: the copy and the original step independently."""
        return UserState(**{f.name: getattr(self, f.name).copy() for f in dataclasses.fields(self)})

    def arrays(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def take(self, index: np.ndarray) -> UserState:
        """State of the users at `index` (population arrays such as `trend` are copied whole)."""
        out = {}
        for name, arr in self.arrays().items():
            out[name] = arr.copy() if name == "trend" else arr[index]
        return UserState(**out)
